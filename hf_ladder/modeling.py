"""The recipe's custom GPT config -> a transformers-native causal LM.

`model_type` picks a stock transformers architecture (GPT-2 by default, `llama` for a Llama-style model),
so every checkpoint loads anywhere with plain `AutoModelForCausalLM.from_pretrained`, no
`trust_remote_code`. `init_from` starts from an existing checkpoint instead (continued pretraining).
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"


def build_model(model_cfg: dict, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised model from the recipe's `model` section, sized to the tokenizer, or the
    checkpoint named by `init_from` (Hub id or directory; safetensors only)."""
    attn = {"attn_implementation": model_cfg["attn_implementation"]} if model_cfg.get("attn_implementation") else {}
    if model_cfg.get("init_from"):
        return AutoModelForCausalLM.from_pretrained(model_cfg["init_from"], use_safetensors=True, **attn)
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("model_type", "init_from", "attn_implementation")}
    config = AutoConfig.for_model(
        model_cfg.get("model_type", "gpt2"), **kwargs, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(config, **attn)


def context_length(model: PreTrainedModel) -> int | None:
    """The model's maximum number of positions (None where the architecture has no limit)."""
    return getattr(model.config, "max_position_embeddings", None)


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(all parameters, parameters outside the token and position embeddings); tied weights count once."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules()
                    if m.__class__.__name__ == "Embedding")
    return total, total - embedding


def describe_scale(model: PreTrainedModel, train_tokens: int, tokens_seen: int) -> str:
    """Parameters, training tokens, tokens per parameter and where that sits against Chinchilla's ~20."""
    total, non_embedding = count_parameters(model)
    ratio = tokens_seen / total
    optimum = CHINCHILLA_TOKENS_PER_PARAM * total
    if ratio < CHINCHILLA_TOKENS_PER_PARAM / 2:
        verdict = f"under-trained: Chinchilla-optimal is ~{optimum / 1e6:.1f}M tokens ({ratio / 20:.2f}x of it)"
    elif ratio > CHINCHILLA_TOKENS_PER_PARAM * 2:
        verdict = f"past Chinchilla-optimal (~{optimum / 1e6:.1f}M tokens): fine for a small model you will run a lot"
    else:
        verdict = "near Chinchilla-optimal"
    return (f"model: {model.config.model_type}, {total / 1e6:.2f}M parameters ({non_embedding / 1e6:.2f}M "
            f"outside embeddings) | training split: {train_tokens / 1e6:.2f}M tokens | this run reads "
            f"{tokens_seen / 1e6:.2f}M tokens = {ratio:.1f} tokens/parameter (Chinchilla: ~20) -> {verdict}")
