"""Models: the recipe's custom config -> a transformers-native causal LM, and the facts about a model that every
stage and the eval need, each computed here once: where it runs, how far it reads, how to load it, how big it is.

`model_type` picks a stock transformers architecture (GPT-2 by default, `llama` for a Llama-style model), so every
checkpoint loads anywhere with plain `AutoModelForCausalLM.from_pretrained`, no `trust_remote_code`. `init_from`
starts from an existing checkpoint instead (continued pretraining).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"
DEFAULT_CONTEXT = 2048  # lm_eval/models/utils.py: a model whose config and tokenizer name no limit
TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length


def device() -> str:
    """The accelerator torch sees ("cuda" for CUDA / ROCm, "mps", "xpu"), else "cpu"."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


def load_model(source, **kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained(source)` the one way hf_ladder loads a model: safetensors only (a
    folder with only a pickled `pytorch_model.bin` is refused with OSError), never remote code.

    Raises:
        OSError: no such folder or Hub id, or no safetensors weights in it.
    """
    return AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, trust_remote_code=False, **kwargs)


def build_model(model_cfg: dict, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised model from the recipe's `model` section, sized to the tokenizer, or the
    checkpoint named by `init_from` (Hub id or directory; safetensors only)."""
    attn = {"attn_implementation": model_cfg["attn_implementation"]} if model_cfg.get("attn_implementation") else {}
    if model_cfg.get("init_from"):
        return load_model(model_cfg["init_from"], **attn)
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("model_type", "init_from", "attn_implementation")}
    config = AutoConfig.for_model(
        model_cfg.get("model_type", "gpt2"), **kwargs, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(config, **attn)


def context_length(model, tokenizer=None) -> int:
    """The longest token sequence a model (or its config) reads: the config's n_positions | max_position_embeddings
    | n_ctx, else the tokenizer's model_max_length, else 2048 (lm_eval/models/utils.py, as the harness decides it)."""
    config = getattr(model, "config", model)
    config = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit != TOKENIZER_INFINITY else DEFAULT_CONTEXT


@contextmanager
def inference(model):
    """Run `model` for inference inside the block (eval mode, no gradients), then restore its training mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def describe_scale(model: PreTrainedModel, train_tokens: int, tokens_seen: int) -> str:
    """Parameters, training tokens, tokens per parameter and where that sits against Chinchilla's ~20."""
    total, non_embedding = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
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
