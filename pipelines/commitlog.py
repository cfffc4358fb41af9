"""The lake's commit log: which rated files each committed run added, in commit order.

Any number of writers share a home: ``cdrflow rate`` runs and stream workers, one at a time
under the lake lock. A run that holds the lock from start to commit (``rate``) reads what it
needs from the lake; a stream worker, which keeps its billed callids and package usage in
memory between batches, must also learn what the others committed since its last batch
(SPEC §5.5: a callid is billed once, whoever rates it). Before its commit point each run
appends one entry, ``_log/<seq>.json``, naming its rated files; a worker, under the lock
before it rates a batch, reads the entries after the last one it knew and adds those files'
callids and package draws to its tables. Entries are kept for ``KEEP`` commits; a worker
further behind reads the lake again instead.

``_head.json`` holds the newest entry's number and, from that entry's commit until its files
are all in their partitions, the run that is publishing. A reader lists the lake's files
between two reads of the head: if the head changed, or a run was publishing, the listing may
hold part of a run, and it lists again (``pipelines.lakefiles.whole_runs``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.home import writing

LOG = "_log"
HEAD = "_head.json"
# Entries kept: a stream worker is at most a few batches behind the others; one idle longer
# than this many commits of the others reads the lake again.
KEEP = 4096


@dataclass(frozen=True)
class Head:
    """The newest commit's number, and the run publishing its files (None: none is)."""

    seq: int = 0
    publishing: str | None = None


def head(root: Path) -> Head:
    """The lake ``root``'s head (a lake written before the log: 0, none publishing)."""
    try:
        data = json.loads((root / HEAD).read_text())
    except FileNotFoundError:
        return Head()
    return Head(int(data["seq"]), data.get("publishing"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with writing(tmp):
            tmp.write_text(json.dumps(data))
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no trace
        raise
    os.replace(tmp, path)


def set_head(root: Path, value: Head) -> None:
    _write_json(root / HEAD, {"seq": value.seq, "publishing": value.publishing})


def append(
    root: Path, run: str, author: str, rated: list[str], replaces: list[str] | None = None
) -> int:
    """Log a run about to commit, as publishing (call under the lake lock, before the run's
    commit point): its rated files (relative to ``root``), who wrote them, and the lake
    files its commit removes (a re-rate's). Returns the entry's number."""
    seq = head(root).seq + 1
    log = root / LOG
    log.mkdir(exist_ok=True)
    _write_json(
        log / f"{seq:012d}.json",
        {"seq": seq, "run": run, "author": author, "rated": rated, "replaces": replaces or []},
    )
    set_head(root, Head(seq, run))
    (log / f"{seq - KEEP:012d}.json").unlink(missing_ok=True)
    return seq


def published(root: Path) -> None:
    """Every committed run's files are in their partitions (under the lake lock)."""
    now = head(root)
    if now.publishing is not None:
        set_head(root, Head(now.seq))


@dataclass(frozen=True)
class Entry:
    seq: int
    run: str
    author: str
    rated: list[str]
    replaces: list[str]


def since(root: Path, cursor: int) -> list[Entry] | None:
    """The entries after number ``cursor``, oldest first (call under the lake lock); None when
    some of them are no longer kept, or the log is behind ``cursor`` (a lake made anew):
    read the lake again instead."""
    newest = head(root).seq
    if cursor > newest:
        return None
    out = []
    for seq in range(cursor + 1, newest + 1):
        try:
            data = json.loads((root / LOG / f"{seq:012d}.json").read_text())
        except FileNotFoundError:
            return None
        out.append(
            Entry(seq, data["run"], data["author"], list(data["rated"]), data.get("replaces", []))
        )
    return out


def replaces(root: Path, seq: int) -> bool:
    """Whether entry ``seq`` is of a run that removes files of the lake (a re-rate)."""
    try:
        data = json.loads((root / LOG / f"{seq:012d}.json").read_text())
    except FileNotFoundError:
        return False
    return bool(data.get("replaces"))
