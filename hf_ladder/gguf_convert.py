"""llama.cpp's own converter (`convert_hf_to_gguf.py`'s `conversion` package and its `gguf-py`), run on one model
folder: `hf_ladder.export` starts it as a fresh process, because the converter needs its own `gguf-py`, newer than
the `gguf` package transformers reads GGUF baselines with, and a process can import only one of them.

    python -m hf_ladder.gguf_convert LLAMA_CPP_DIR MODEL_DIR OUTFILE {f32,f16,q8_0}

The ladder's tokenizer is a byte-level BPE trained here: its pre-tokenizer is GPT-2's (ByteLevel with GPT-2's split
regex, no prefix space), but the converter names a pre-tokenizer by hashing the token ids of a fixed text, and knows
only the hashes of published tokenizers (`TextModel.get_vocab_base_pre`). Through the converter's own registry
(`ModelBase.register`, last registration wins) this registers, for the model's architecture, a subclass of the
converter's class that asks the converter first and, where it does not know the tokenizer, answers "gpt-2" for
exactly that pre-tokenizer (and still refuses any other). For
GPT-2 it also reads the context length from `n_positions` (transformers 5 writes no `n_ctx`). No vendored file is
edited.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def is_gpt2_pretokenizer(model_dir: Path) -> bool:
    """tokenizer.json splits as GPT-2 does: no normalizer, one ByteLevel pre-tokenizer, GPT-2's regex on, no prefix
    space."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return False
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("normalizer"):
        return False
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return (len(parts) == 1 and parts[0].get("type") == "ByteLevel" and parts[0].get("use_regex", True)
            and not parts[0].get("add_prefix_space", False))


def convert(llama_cpp: Path, model_dir: Path, outfile: Path, outtype: str) -> None:
    """Write the GGUF of `model_dir` to `outfile` (f32, f16 or q8_0; q8_0 keeps F16 for tensors whose rows are not
    a multiple of 32, as the converter does)."""
    sys.path[:0] = [str(llama_cpp / "gguf-py"), str(llama_cpp)]  # the converter's gguf, before site-packages'
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    if not Path(gguf.__file__).resolve().is_relative_to(llama_cpp.resolve()):
        raise SystemExit(f"gguf was imported from {gguf.__file__}, not from {llama_cpp}/gguf-py")
    hparams = ModelBase.load_hparams(model_dir, False)
    arch = get_model_architecture(hparams, ModelType.TEXT)
    base = get_model_class(arch)  # the converter's class, registered by its module

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return base.get_vocab_base_pre(self, tokenizer)  # a published tokenizer the converter knows
        except NotImplementedError:
            if is_gpt2_pretokenizer(self.dir_model):
                return "gpt-2"
            raise

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        if "n_positions" in self.hparams:  # GPT-2 in transformers 5: the converter reads n_ctx
            self.hparams.setdefault("n_ctx", self.hparams["n_positions"])

    ladder = type(f"Ladder{base.__name__}", (base,), {"model_arch": base.model_arch, "__init__": __init__,
                                                       "get_vocab_base_pre": get_vocab_base_pre})
    ModelBase.register(arch)(ladder)
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    with torch.inference_mode():
        model = get_model_class(arch)(model_dir, ftype, outfile, model_name=model_dir.parent.name)
        model.write()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    lc, model, out, kind = sys.argv[1:5]
    convert(Path(lc), Path(model), Path(out), kind)
