"""`hf-ladder export RUN_DIR/STAGE --to gguf`: a rung as one GGUF file for llama.cpp and Ollama, with its Modelfile.

    hf-ladder export runs/shakespeare-tiny/lora --to gguf [--outtype f16|q8_0|f32] [--out FILE] [--force]

The conversion is llama.cpp's own (`hf_ladder.gguf_convert` runs its converter in a separate process) from the
llama.cpp that the pinned llama-cpp-python sdist vendors; `make gguf-tools` puts that converter in
`.venv/share/llama.cpp` (or set `HF_LADDER_LLAMA_CPP` to a llama.cpp checkout) and builds the `llama_cpp` runtime.
A LoRA rung's `model/` is its merged model already. A bitsandbytes rung (`quantize/<variant>`) has no GGUF form:
export the full-precision rung it came from with `--outtype q8_0` (llama.cpp's 8-bit format) instead.

Beside the GGUF, `<name>.Modelfile` for `ollama create`: the rung's decoding (generation_config.json), its context
length, its stop tokens (eos; `<|im_end|>` for chat rungs) and, for the ladder's ChatML template, the same template in
Ollama's syntax; a plain language model gets the raw prompt.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from hf_ladder.data.chat import CHATML_WITH_GENERATION, END_OF_TURN
from hf_ladder.runs import read_json, write_text
from hf_ladder.schema import RecipeError

OUTTYPES = ("f16", "q8_0", "f32")
CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion", "gguf-py")
OLLAMA_CHATML = ('{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
                 '<|im_start|>assistant\n')


@dataclass
class Exported:
    gguf: Path
    modelfile: Path
    size_bytes: int
    name: str  # the Ollama model name suggested: <recipe>-<rung>


def llama_cpp_dir() -> Path:
    """The folder holding llama.cpp's converter: `HF_LADDER_LLAMA_CPP`, else `<venv>/share/llama.cpp`.

    Raises:
        RecipeError: the converter is not there (the message says how to get it).
    """
    folder = Path(os.environ.get("HF_LADDER_LLAMA_CPP", Path(sys.prefix) / "share" / "llama.cpp"))
    missing = [f for f in CONVERTER_FILES if not (folder / f).exists()]
    if missing:
        raise RecipeError(f"llama.cpp's converter is not in {folder} (missing {', '.join(missing)}); run "
                          f"`make gguf-tools`, or set HF_LADDER_LLAMA_CPP to a llama.cpp checkout")
    return folder


def rung_model(stage_dir: Path) -> Path:
    """The model folder of a rung (`RUN_DIR/STAGE`, `RUN_DIR/quantize/VARIANT`, or a model folder itself).

    Raises:
        RecipeError: no model there, or a bitsandbytes-quantized one (with the command that exports its source).
    """
    model = stage_dir / "model" if (stage_dir / "model").is_dir() else stage_dir
    config = read_json(model / "config.json")
    if config is None:
        raise RecipeError(f"{stage_dir}: no model here (no model/config.json); give RUN_DIR/STAGE of a finished stage")
    if "quantization_config" in config:
        quant = config["quantization_config"].get("quant_method", "bitsandbytes")
        source = _quantize_source(stage_dir)
        raise RecipeError(f"{stage_dir}: {quant} weights have no GGUF form (llama.cpp has its own quantized types); "
                          f"export the full-precision rung it was made from with llama.cpp's 8-bit type: "
                          f"hf-ladder export {source or 'RUN_DIR/STAGE'} --to gguf --outtype q8_0")
    return model


def export_gguf(stage_dir: str | Path, outtype: str = "f16", out: str | Path | None = None,
                force: bool = False, name: str | None = None) -> Exported:
    """Convert a rung to GGUF (`outtype`: f16, q8_0 or f32) and write its Modelfile beside it. Default file:
    `<stage_dir>/gguf/<name>-<outtype>.gguf`, `name` (the Ollama model name) by default `<recipe>-<stage>` from
    the run directory's layout. Written to a temporary name in the same folder, then renamed.

    Raises:
        RecipeError: a bad rung, outtype or converter folder, or `out` exists (without `force`); the converter's
            own failure, with its last line; a file that cannot be written.
    """
    stage_dir = Path(stage_dir)
    if outtype not in OUTTYPES:
        raise RecipeError(f"--outtype: {outtype!r} is not one of {', '.join(OUTTYPES)}")
    model = rung_model(stage_dir)
    converter = llama_cpp_dir()
    name = name or rung_name(stage_dir, model)
    target = Path(out) if out else stage_dir / "gguf" / f"{name}-{outtype}.gguf"
    if target.exists() and not force:
        raise RecipeError(f"{target} exists; add --force to write it again")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".partial")  # no `{}`: the
        os.close(fd)  # converter formats its output name
        partial = Path(partial)
        done = subprocess.run([sys.executable, "-m", "hf_ladder.gguf_convert", str(converter), str(model),
                               str(partial), outtype], capture_output=True, text=True, errors="replace")
        if done.returncode != 0 or not partial.stat().st_size:
            partial.unlink(missing_ok=True)
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise RecipeError(f"{model}: llama.cpp's converter failed: {last}")
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
        os.replace(partial, target)
        modelfile = target.with_name(target.stem + ".Modelfile")
        write_text(modelfile, ollama_modelfile(model, target.name, name))
    except OSError as e:
        raise RecipeError(f"{target}: cannot write it ({e.strerror or e})") from None
    return Exported(gguf=target, modelfile=modelfile, size_bytes=target.stat().st_size, name=name)


def ollama_modelfile(model: Path, gguf_name: str, name: str) -> str:
    """An Ollama Modelfile for the GGUF `gguf_name` beside it (Ollama model `name`): the rung's template, stop
    tokens and decoding."""
    generation = read_json(model / "generation_config.json", {})
    config = read_json(model / "config.json", {})
    tokenizer = read_json(model / "tokenizer_config.json", {})
    template_file = model / "chat_template.jinja"
    chat = template_file.read_text(encoding="utf-8") if template_file.is_file() else tokenizer.get("chat_template")
    lines = [f"# Ollama: ollama create {name} -f {Path(gguf_name).stem}.Modelfile",
             f"FROM ./{gguf_name}"]
    if chat == CHATML_WITH_GENERATION:
        lines.append(f'TEMPLATE """{OLLAMA_CHATML}"""')
        stops = [END_OF_TURN, tokenizer.get("eos_token")]
    elif chat:
        lines.append("# the chat template is in the GGUF (tokenizer.chat_template); Ollama reads it from there")
        stops = [tokenizer.get("eos_token")]
    else:
        lines.append('TEMPLATE """{{ .Prompt }}"""')  # a plain language model continues the raw text
        stops = [tokenizer.get("eos_token")]
    lines += [f'PARAMETER stop "{s}"' for s in dict.fromkeys(filter(None, stops))]
    context = config.get("n_positions") or config.get("max_position_embeddings")
    if context:
        lines.append(f"PARAMETER num_ctx {context}")
    if generation.get("do_sample"):
        lines += [f"PARAMETER temperature {generation.get('temperature', 1.0)}",
                  f"PARAMETER top_p {generation.get('top_p', 1.0)}"]
        if generation.get("top_k"):
            lines.append(f"PARAMETER top_k {generation['top_k']}")
    else:
        lines.append("PARAMETER temperature 0")
    lines.append(f"PARAMETER repeat_penalty {generation.get('repetition_penalty', 1.0)}")  # Ollama's default is 1.1
    return "\n".join(lines) + "\n"


def rung_name(stage_dir: Path, model: Path) -> str:
    """An Ollama-style name: <recipe>-<stage> for the layout runs/<recipe>/<stage>/model, else the model folder's
    own name; lower case, letters, digits and dashes."""
    stage_dir = stage_dir.resolve()
    parts = [stage_dir.parent.name, stage_dir.name] if model.resolve() != stage_dir else [stage_dir.name]
    return re.sub(r"[^a-z0-9.]+", "-", "-".join(p for p in parts if p).lower()).strip("-") or "model"


def _quantize_source(stage_dir: Path) -> str | None:
    """The folder of the model a quantized rung came from, from the run manifest, as a stage folder."""
    manifest = read_json(stage_dir.parent.parent / "manifest.json", {})
    source = ((manifest.get("stages") or {}).get("quantize") or {}).get("inputs", {}).get("source_model")
    if not source:
        return None
    path = Path(source)
    return str(path.parent if path.name == "model" else path)


def describe(exported: Exported) -> str:
    """What `hf-ladder export` prints: the file, its size, and how to run it in llama.cpp (continuing the monitor's
    first prompt, from the stage's recipe.resolved.yaml) and Ollama."""
    resolved = exported.gguf.parent.parent / "recipe.resolved.yaml"
    recipe = yaml.safe_load(resolved.read_text(encoding="utf-8")) if resolved.is_file() else {}
    prompt = ((recipe.get("monitor") or {}).get("prompts") or ["Hello"])[0]
    mb = exported.size_bytes / 1e6
    return (f"wrote {exported.gguf} ({mb:.1f} MB)\n"
            f"  llama.cpp: llama-cli -m {exported.gguf} -p {json.dumps(prompt)} -n 64\n"
            f"  Ollama:    ollama create {exported.name} -f {exported.modelfile} && ollama run {exported.name}")

