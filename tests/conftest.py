"""Shared fixtures. Every test runs offline (HF_HUB_OFFLINE=1) on ../shared/data or on models it builds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HF_LADDER_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
DEFAULT_RECIPE = ROOT / "recipes" / "shakespeare-tiny.yaml"

# A tiny model and a short run: enough to watch real learning on real text in seconds.
TINY = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.n_positions=64", "data.block_size=64",
        "pretrain.per_device_train_batch_size=16", "pretrain.bf16=false", "pretrain.logging_steps=10",
        "monitor.generation.max_new_tokens=40", "monitor.judge=null"]  # the judge: tests that read it turn it on


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"the shared datasets are expected at {DATA} (set HF_LADDER_SHARED)")
    return DATA


def tiny_recipe(run_dir, *overrides, recipe=DEFAULT_RECIPE):
    """The default recipe shrunk to a tiny model, writing into `run_dir`, with extra `key=value` overrides."""
    from hf_ladder.recipe import load_recipe

    return load_recipe(recipe, [*TINY, f"run_dir={run_dir}", *overrides])


@contextlib.contextmanager
def calls_to(*functions):
    """Record every call of `functions` inside the block, by code object: whichever module imported them under
    whatever name, a call is seen (a mock.patch of one module's name would miss the others). Yields the list of
    the called functions' qualified names, in call order."""
    codes = {f.__code__: f.__qualname__ for f in functions}
    seen: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen.append(codes[frame.f_code])

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)
        threading.setprofile(None)


def expensive_work():
    """What no bad input may reach: reading a corpus or a Hub/file dataset, building or loading a model."""
    import datasets
    import transformers

    from hf_ladder import modeling
    from hf_ladder.data import corpus

    return (corpus.load_corpus, corpus.parse_play, datasets.load_dataset, modeling.build_model, modeling.load_model,
            transformers.PreTrainedModel.__init__)


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under `path` with its size and modification time: what "nothing on disk changed" compares."""
    path = Path(path)
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


def poisoned_loss(value: float, from_step: int = 25):
    """Trainer.compute_loss whose loss is multiplied by `value` (nan, inf) from optimizer step `from_step` on."""
    from transformers import Trainer

    real = Trainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        out = real(self, model, inputs, *args, **kwargs)
        if self.state.global_step < from_step:
            return out
        return (out[0] * value, *out[1:]) if isinstance(out, tuple) else out * value

    return compute_loss


def assert_stopped_at_30_keeping_checkpoint_20(error, stage_dir, what: str) -> None:
    """The stage stopped at the logging step 30 naming `what`, checkpoint-20 is kept and finite, nothing else saved."""
    message = str(error.value)
    assert re.search(rf"{what}.* at step 30", message) and "checkpoint-20" in message, message
    checkpoints = stage_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    import torch
    from safetensors.torch import load_file

    (weights,) = (checkpoints / "checkpoint-20").glob("*model.safetensors")  # LoRA: adapter_model.safetensors
    assert all(torch.isfinite(t).all() for t in load_file(weights).values())  # the last good one, intact
    assert not (stage_dir / "model").exists()
    manifest = stage_dir.parent / "manifest.json"
    assert not manifest.exists() or stage_dir.name not in json.loads(manifest.read_text())["stages"]


# Injected into a copy of a report page: on load, which images loaded and which rows the tables have.
CHECK = """<script>
window.addEventListener("load", () => {
  const rows = id => [...document.querySelectorAll(`table#${id} tbody tr`)].map(r => r.dataset.key);
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  const pre = document.createElement("pre");
  pre.id = "check";
  const widths = Object.fromEntries(["benchmarks", "accuracy", "readings"].map(id => [id,
    document.querySelector(`table#${id}`)?.getBoundingClientRect().right ?? 0]));
  const samples = [...document.querySelectorAll("table#samples thead th")].map(th => th.textContent);
  pre.textContent = JSON.stringify({images, stages: rows("stages"), rungs: rows("benchmarks"), widths, samples});
  document.body.appendChild(pre);
});
</script>"""


def headless_chromium(url: str, tmp_path: Path, *options: str) -> str:
    """Open `url` in headless Chromium (Debian `chromium`) in a 1400 x 1000 window, let its scripts run for 5 s of
    virtual time, and return the DOM it ends with (`--dump-dom`; other `options`, e.g. `--screenshot=FILE`, too).
    Without a Chromium the test is skipped, except in CI (`CI` set), where it fails: .ci/run installs one."""
    browser = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    if browser is None:
        missing = "no chromium, chromium-browser or google-chrome on PATH (Debian: apt install chromium)"
        if os.environ.get("CI"):
            pytest.fail(missing + "; in CI, .ci/run installs Debian's chromium")
        pytest.skip(missing)
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}/chrome",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--no-first-run", "--virtual-time-budget=5000", "--window-size=1400,1000", *options,
                           "--dump-dom", url], capture_output=True, text=True, timeout=60).stdout


def chromium_summary(index: Path, tmp_path: Path) -> dict:
    """Open a report's index.html in headless Chromium (`headless_chromium`):
    {images: [{src, ok}], stages: [row keys], rungs: [row keys], widths: {benchmark table: its right edge, px},
    samples: [the samples table's column headers]}."""
    check = index.with_name("check.html")  # beside index.html, so the images' relative paths resolve the same
    check.write_text(index.read_text().replace("</body>", CHECK + "</body>"))
    dom = headless_chromium(check.as_uri(), tmp_path)
    check.unlink()
    found = re.search(r'<pre id="check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run; page starts {dom[:300]!r}"
    return json.loads(html.unescape(found.group(1)))
