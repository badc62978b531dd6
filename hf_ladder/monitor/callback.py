"""The sample monitor: a `TrainerCallback` that reads the model's samples while it trains.

Every `sample_every` optimizer steps it continues each fixed prompt twice, greedy and with the recipe's
sampling settings (every prompt under both decodings in one left-padded batch, KV cache on), prints the samples, and
appends them to `samples.jsonl` with the step, the per-sample loss and the readings of
`hf_ladder.monitor.reading` (coherence, rep_4, distinct_2, loss_tier); the last step's round comes when training
ends, outside the Trainer's clock (train_runtime). The judge (`monitor.judge`) reads no
sample inside the training loop (on the CPU it cost more than the generation): when training ends it reads
every round's samples in one batched pass, fills their judge_ppl in `samples.jsonl` and prints its mean per
round. Read judge perplexity with rep_4: a repetition loop is *not* surprising to the judge (low judge_ppl),
but its rep_4 is high. From the in-loop readings it raises four signals:

- auto-halt: `halt_patience` consecutive sample rounds whose mean coherence (of the sampled continuations;
  greedy loops are a decoding artefact, not a collapse) is below `halt_below` stop training cleanly, with
  a checkpoint saved; `halted` says why.
- memorization: a sample whose per-sample loss is below `memorization_loss` is looked up in an n-gram index
  of the training text; a verbatim match is an alert that shows the training span.
- divergence: a logged training loss or gradient norm that is nan or inf, or weights that are no longer
  finite at a sample round, stop training at once without saving (the last checkpoint stays the last good
  one); `diverged` says where.
- overfitting: at each evaluation it prints train loss, validation loss and their gap; validation loss
  rising for `patience` evaluations in a row while training loss falls is an alert (and stops training
  when `stop_on_overfit`).

Rounds and alerts also go to the trackers of `report_to` (`hf_ladder.monitor.trackers`: TensorBoard text and
scalars, W&B tables) once `trackers` is set, on the process that writes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from transformers import TrainerCallback

from hf_ladder.generate import generate_batch, generation_config
from hf_ladder.monitor.judge import load_judge
from hf_ladder.monitor.memorization import NgramIndex
from hf_ladder.monitor.reading import read_samples
from hf_ladder.monitor.trackers import Trackers
from hf_ladder.runs import read_jsonl, write_json, write_jsonl
from hf_ladder.schema import MonitorConfig


class SampleMonitor(TrainerCallback):
    """See the module docstring. `samples_path` is the stage's `samples.jsonl`; `train_docs` the training text."""

    def __init__(self, cfg: MonitorConfig, tokenizer, train_docs: list[str], samples_path: Path, seed: int = 0):
        self.cfg, self.tokenizer, self.train_docs, self.seed = cfg, tokenizer, train_docs, seed
        self.samples_path = Path(samples_path)
        g = cfg.generation
        self.decodings = {"greedy": generation_config(tokenizer, g.max_new_tokens, 0.0,
                                                      repetition_penalty=g.repetition_penalty)}
        if g.temperature > 0:
            self.decodings["sampled"] = generation_config(tokenizer, g.max_new_tokens, g.temperature, g.top_k,
                                                          g.top_p, g.repetition_penalty)
        self.judged = "sampled" if "sampled" in self.decodings else "greedy"  # what auto-halt reads
        self._index: NgramIndex | None = None
        self.rounds: list[dict] = []  # {"step", "coherence"}: one per sample round
        self.evals: list[dict] = []  # {"step", "train_loss", "eval_loss"}
        self.alerts: list[dict] = []  # memorization and overfitting alerts, in order
        self.halted: str | None = None  # why training was halted (coherence), if it was
        self.stopped_overfit: str | None = None
        self.diverged: str | None = None  # what went non-finite, and at which step
        self._overfit_open = False
        self.trackers: Trackers | None = None  # set by the stage on the writing process (`stages.common.train`)

    # ------------------------------------------------------------------------------ trainer events

    def on_train_begin(self, args, state, control, **kwargs):
        """Rebuild the readings of a resumed run: sample rows up to the checkpoint's step (later ones are
        sampled again), so the halt streak and memorization alerts carry over; evaluations from the
        restored log history, so the overfitting check does too."""
        rows, self.rounds, self.alerts = [], [], []
        if self.samples_path.exists():
            rows = [r for r in read_jsonl(self.samples_path) if r["step"] <= state.global_step]
            if state.is_world_process_zero:  # every process reads the file, one rewrites it
                write_jsonl(self.samples_path, rows)
        for step in sorted({r["step"] for r in rows}):
            judged = [r["coherence"] for r in rows if r["step"] == step and r["decoding"] == self.judged]
            if judged:
                self.rounds.append({"step": step, "coherence": sum(judged) / len(judged)})
        self.alerts = [{"type": "memorization", "step": r["step"], "prompt": r["prompt"], "loss": r["loss"],
                        **r["memorized"]} for r in rows if "memorized" in r]
        self.evals = []
        for h in state.log_history:
            if "eval_loss" in h:
                self.evals.append({"step": h["step"], "train_loss": _last_train_loss(state.log_history, h["step"]),
                                   "eval_loss": h["eval_loss"]})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.diverged is not None or state.global_step % self.cfg.sample_every:
            return
        if not all(p.isfinite().all() for p in model.parameters()):
            self._diverge("the weights are no longer finite", state.global_step, control)
        elif state.global_step < state.max_steps or args.load_best_model_at_end:
            # the last step's round is on_train_end's, once the Trainer's clock (train_runtime) has stopped; with
            # load_best_model_at_end it stays here, before the best checkpoint's weights replace the last step's
            self.sample_round(model, state.global_step, control, write=state.is_world_process_zero)

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = [f"{k} {v}" for k, v in (logs or {}).items() if k in ("loss", "grad_norm") and not math.isfinite(v)]
        if bad:
            self._diverge(f"training {' and '.join(bad)}", state.global_step, control)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.diverged is None and (not self.rounds or self.rounds[-1]["step"] != state.global_step):
            self.sample_round(model, state.global_step, control, write=state.is_world_process_zero)
        if state.is_world_process_zero:
            self.judge_samples()
        if self.trackers is not None:
            self.trackers.close()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics or self.diverged:
            return
        train, val = _last_train_loss(state.log_history, state.global_step), metrics["eval_loss"]
        self.evals.append({"step": state.global_step, "train_loss": train, "eval_loss": val})
        if state.is_world_process_zero:
            print(f"[eval] step {state.global_step} | train loss {train:.3f} | val loss {val:.3f} "
                  f"| gap {val - train:+.3f} | val ppl {math.exp(min(val, 50)):.1f}", flush=True)
        self._check_overfitting(state, control)

    # ------------------------------------------------------------------------------ the readings

    def _diverge(self, what: str, step: int, control) -> None:
        """Stop now, save nothing: a checkpoint written from here on would hold nan weights."""
        if self.diverged is None:
            self.diverged = f"{what} at step {step}"
            print(f"\n*** divergence: {self.diverged}; stopping without saving ***\n", flush=True)
            self._track_alert(step, "divergence", self.diverged)
        control.should_training_stop, control.should_save, control.should_evaluate = True, False, False

    def sample_round(self, model, step: int, control=None, write: bool = True) -> list[dict]:
        """Generate, read (`hf_ladder.monitor.reading`: coherence, rep_4, distinct_2, loss_tier), print and store
        one round of samples; update the halt streak. Their judge_ppl comes after training (`judge_samples`)."""
        prompts, decodings = self.cfg.prompts, list(self.decodings)
        # every prompt under every decoding in one batched generation: the greedy rows ride in the sampled batch
        batch = generate_batch(model, self.tokenizer, prompts * len(decodings), self.decodings[decodings[-1]],
                               seed=self.seed + step * 1000, greedy=[d == "greedy" for d in decodings
                                                                     for _ in prompts])
        samples = [(prompt, decoding, batch[j * len(prompts) + i]) for i, prompt in enumerate(prompts)
                   for j, decoding in enumerate(decodings)]
        readings = read_samples([p for p, _, _ in samples], [s.text for _, _, s in samples],
                                [s.loss for _, _, s in samples], judge=None)  # judged after training
        rows = []
        for (prompt, decoding, sample), reading in zip(samples, readings):
            row = {"step": step, "prompt": prompt, "decoding": decoding, "text": sample.text,
                   "loss": round(sample.loss, 4), **reading, "ended": sample.ended}
            if sample.loss < self.cfg.memorization_loss:
                match = self.index.find(prompt + sample.text)
                if match is not None:
                    row["memorized"] = {"words": match.words, "train_span": match.train_span,
                                        "train_doc": match.train_doc, "train_char": match.train_char}
                    self.alerts.append({"type": "memorization", "step": step, "prompt": prompt,
                                        "loss": row["loss"], **row["memorized"]})
                    if write:
                        self._track_alert(step, "memorization", f"{decoding} sample of {prompt!r} at loss "
                                          f"{row['loss']:.3f}: {match.words} words match training document "
                                          f"{match.train_doc} at char {match.train_char}: {match.train_span!r}")
            rows.append(row)
        judged = [r["coherence"] for r in rows if r["decoding"] == self.judged]
        self.rounds.append({"step": step, "coherence": sum(judged) / len(judged)})
        if write:
            self._print(rows)
            with self.samples_path.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            if self.trackers is not None:
                self.trackers.sample_round(step, rows)
            if any("memorized" in r for r in rows):
                self._write_alerts()
        self._check_halt(control)
        return rows

    def judge_samples(self) -> None:
        """The judge's pass: judge_ppl of every sample in `samples.jsonl` that has text and no judge_ppl yet, in
        one batched call; the file is rewritten atomically, and the mean judge_ppl of each round's judged decoding
        is printed. Nothing happens without a judge (or when it cannot load)."""
        judge = load_judge(self.cfg.judge)
        if judge is None or not self.samples_path.exists():
            return
        rows = read_jsonl(self.samples_path)
        todo = [r for r in rows if r.get("judge_ppl") is None and r["text"].strip()]
        if not todo:
            return
        for row, ppl in zip(todo, judge.perplexity([r["prompt"] for r in todo], [r["text"] for r in todo])):
            row["judge_ppl"] = round(ppl, 3)
        write_jsonl(self.samples_path, rows)
        by_step: dict[int, list[float]] = {}
        for r in rows:
            if r["decoding"] == self.judged and r.get("judge_ppl") is not None:
                by_step.setdefault(r["step"], []).append(r["judge_ppl"])
        means = " · ".join(f"{step}: {sum(v) / len(v):.1f}" for step, v in by_step.items())
        if self.trackers is not None:
            for step in sorted({r["step"] for r in todo}):
                self.trackers.sample_round(step, [r for r in rows if r["step"] == step], tag="samples_judged")
        print(f"judge {judge.source} read {len(todo)} samples; mean judge ppl ({self.judged}) by step: {means}",
              flush=True)

    def _write_alerts(self) -> None:
        """alerts.json as soon as an alert is raised (the dashboard follows it; the stage rewrites it at the end)."""
        write_json(self.samples_path.with_name("alerts.json"), self.alerts)

    def _track_alert(self, step: int, kind: str, message: str) -> None:
        if self.trackers is not None:
            self.trackers.alert(step, kind, message)

    @property
    def index(self) -> NgramIndex:
        if self._index is None:  # built on the first low-loss sample only
            self._index = NgramIndex(self.train_docs, self.cfg.memorization_ngram)
        return self._index

    def _check_halt(self, control) -> None:
        streak = 0
        for r in reversed(self.rounds):
            if r["coherence"] >= self.cfg.halt_below:
                break
            streak += 1
        if streak >= self.cfg.halt_patience and self.halted is None:
            low = self.rounds[-streak:]
            self.halted = (f"auto-halt: mean {self.judged} coherence below {self.cfg.halt_below:g} for {streak} "
                           f"consecutive sample rounds (steps {low[0]['step']}-{low[-1]['step']}, last "
                           f"{low[-1]['coherence']:.1f}/100)")
            print(f"\n*** {self.halted}: stopping, checkpoint kept ***\n", flush=True)
            self._track_alert(low[-1]["step"], "halt", self.halted)
            if control is not None:
                control.should_training_stop = True
                control.should_save = True

    def _check_overfitting(self, state, control) -> None:
        window = self.evals[-(self.cfg.patience + 1):]
        rising = len(window) == self.cfg.patience + 1 and all(
            b["eval_loss"] > a["eval_loss"] for a, b in zip(window, window[1:]))
        falling = rising and window[-1]["train_loss"] < window[0]["train_loss"]
        if not (rising and falling):
            self._overfit_open = False
            return
        if self._overfit_open:
            return
        self._overfit_open = True
        val = " -> ".join(f"{e['eval_loss']:.3f}" for e in window)
        msg = (f"overfitting: validation loss rose for {self.cfg.patience} evaluations ({val}) while training "
               f"loss fell ({window[0]['train_loss']:.3f} -> {window[-1]['train_loss']:.3f})")
        self.alerts.append({"type": "overfitting", "step": state.global_step, "message": msg,
                            "eval_losses": [e["eval_loss"] for e in window],
                            "train_losses": [e["train_loss"] for e in window]})
        if state.is_world_process_zero:
            print(f"\n*** ALERT {msg} ***\n", flush=True)
            self._write_alerts()
        self._track_alert(state.global_step, "overfitting", msg)
        if self.cfg.stop_on_overfit:
            self.stopped_overfit = msg
            control.should_training_stop = True
            control.should_save = True

    def _print(self, rows: list[dict]) -> None:
        print(f"\n── samples @ step {rows[0]['step']} " + "─" * 50, flush=True)
        for r in rows:
            judge = "" if r["judge_ppl"] is None else f" · judge ppl {r['judge_ppl']:.1f}"
            print(f"[{r['decoding']}] coherence {r['coherence']:.0f}/100 · rep_4 {r['rep_4']:.2f}{judge} · "
                  f"loss {r['loss']:.2f} ({r['loss_tier'] or 'no loss'})")
            print(re.sub(r"\n{3,}", lambda m: f"\n[{len(m.group()) - 1} blank lines]\n", r["prompt"] + r["text"]))
            if "memorized" in r:
                m = r["memorized"]
                print(f"*** ALERT memorization: loss {r['loss']:.3f} < {self.cfg.memorization_loss} and "
                      f"{m['words']} words match training document {m['train_doc']} at char {m['train_char']}:\n"
                      f"    {m['train_span'][:400]!r}")
            print()


def _last_train_loss(log_history: list[dict], step: int) -> float:
    """The training loss last logged at or before `step` (nan before the first log)."""
    losses = [h["loss"] for h in log_history if "loss" in h and h["step"] <= step]
    return losses[-1] if losses else float("nan")
