"""The sample monitor's rounds and alerts in the trackers of `report_to`, beside `samples.jsonl`.

TensorBoard (`report_to: tensorboard`, the ladder's default): a run named `samples` next to the Trainer's own
(`<stage>/checkpoints/runs/samples/`), so `tensorboard --logdir runs/<recipe>` shows both. Each sample round is one
text entry `samples` at its step (per sample: prompt, decoding, the sample, coherence, judge perplexity, rep_4,
loss tier) and its means as scalars `samples/<decoding>/<reading>`; each alert (halt, memorization with its
training span, overfitting, divergence) is a text entry `alerts` at its step. The judge reads after training
(`SampleMonitor.judge_samples`): its perplexities then come as the scalars `samples/<decoding>/judge_ppl` and the
text entry `samples_judged` of each round. W&B (`report_to: wandb`): the same scalars and a `wandb.Table` per round
in the run the Trainer's `WandbCallback` started, stepped by `train/global_step` as that callback does; the
untrained model's round (step 0) comes before that run starts and goes to TensorBoard and samples.jsonl only.
"""

from __future__ import annotations

import math
from pathlib import Path

READINGS = ("coherence", "rep_4", "distinct_2", "loss")  # the per-round means logged as scalars
COLUMNS = ("prompt", "decoding", "text", "coherence", "judge_ppl", "rep_4", "loss", "loss_tier")


class Trackers:
    """Writers for the trackers named in `report_to` (a list, as TrainingArguments holds it); the others are
    ignored. `log_dir` is TensorBoard's folder for the `samples` run; `purge_step` (a resumed run: the checkpoint's
    step + 1) drops that run's events from that step on, which the interrupted attempt wrote and this one writes
    again. Nothing is opened until the first write."""

    def __init__(self, report_to: list[str] | str | None, log_dir: Path, purge_step: int | None = None):
        report_to = [report_to] if isinstance(report_to, str) else list(report_to or [])
        self.tensorboard = "tensorboard" in report_to  # TrainingArguments has expanded "all" already
        self.wandb = "wandb" in report_to
        self.log_dir, self.purge_step = Path(log_dir), purge_step
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.purge_step)
        return self._writer

    def sample_round(self, step: int, rows: list[dict], tag: str = "samples") -> None:
        """One round's sample rows (`SampleMonitor.sample_round`'s) at `step`: text and mean readings."""
        if not rows:
            return
        means = {f"samples/{decoding}/{key}": _mean([r.get(key) for r in rows if r["decoding"] == decoding])
                 for decoding in dict.fromkeys(r["decoding"] for r in rows)
                 for key in (READINGS if tag == "samples" else ("judge_ppl",))}
        means = {k: v for k, v in means.items() if v is not None}
        if self.tensorboard:
            self.writer.add_text(tag, round_markdown(rows), step)
            for key, value in means.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.wandb:
            self._wandb_log({**means, f"{tag}/table": _wandb_table(rows)}, step)

    def alert(self, step: int, kind: str, message: str) -> None:
        """An alert (`kind`: halt, memorization, overfitting, divergence) as text at `step`."""
        text = f"**{kind}** at step {step}: {message}"
        if self.tensorboard:
            self.writer.add_text("alerts", text, step)
            self.writer.flush()
        if self.wandb:
            self._wandb_log({"alerts": text}, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @staticmethod
    def _wandb_log(values: dict, step: int) -> None:
        import wandb
        if wandb.run is not None:  # the Trainer's WandbCallback starts the run in on_train_begin
            wandb.log({**values, "train/global_step": step})


def round_markdown(rows: list[dict]) -> str:
    """A round's samples as Markdown (TensorBoard's text plugin renders it): per sample a line of readings, then
    prompt and sample as an indented code block (newlines kept)."""
    parts = []
    for r in rows:
        judge = "after training" if r.get("judge_ppl") is None else f"{r['judge_ppl']:.1f}"
        parts.append(f"**{r['decoding']}** · coherence {r['coherence']:.0f}/100 · judge ppl {judge} · "
                     f"rep_4 {r['rep_4']:.2f} · loss {_fmt(r.get('loss'))} ({r.get('loss_tier') or 'no loss'})"
                     + (" · **memorized**" if "memorized" in r else ""))
        parts.append("\n".join("    " + line for line in (r["prompt"] + r["text"]).split("\n")))
    return "\n\n".join(parts)


def _wandb_table(rows: list[dict]):
    import wandb
    return wandb.Table(columns=list(COLUMNS), data=[[r.get(c) for c in COLUMNS] for r in rows])


def _mean(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _fmt(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"
