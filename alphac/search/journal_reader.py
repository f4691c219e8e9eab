"""What is read out of a journal without writing it: ``history.csv`` and the integrity check.

The journal (:mod:`alphac.search.journal`) is the writer's storage of trials; everything here only
reads it (any journal, opened read-only or not) and the run directory's files, and executes
nothing. Example::

    with Journal.open(run_dir, readonly=True) as journal:
        write_history_csv(journal, run_dir / "history.csv")
        assert check_journal(journal) == []
"""

from __future__ import annotations

import csv
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from alphac.search.journal import (
    HISTORY_COLUMNS,
    CorruptJournalError,
    Journal,
    JournalError,
    Trial,
    _relative_path,
    _sha256,
)

__all__ = ["check", "check_journal", "history_rows", "write_history_csv"]


def history_rows(journal: Journal) -> list[dict[str, Any]]:
    """One row per ``done`` trial, in the order they finished, keyed by HISTORY_COLUMNS."""
    done = sorted(journal.individuals("done"), key=lambda t: (t.finished_at, t.id))
    rows = []
    for trial in done:
        mutation = trial.mutation or {}
        rungs = [r for r in trial.rungs if r.val_accuracy is not None]
        values = {**{name: getattr(trial, name, None) for name in HISTORY_COLUMNS},
                  "mutation_kind": mutation.get("kind"),
                  "mutation_block": mutation.get("block"),
                  "rung": rungs[-1].rung if rungs else 0,
                  "rung_val_accuracy": rungs[-1].val_accuracy if rungs else trial.val_accuracy}
        rows.append({name: values[name] for name in HISTORY_COLUMNS})
    return rows


def write_history_csv(journal: Journal, path: str | os.PathLike[str]) -> Path:
    """Write :func:`history_rows` as CSV to ``path`` (replaced atomically); returns the path."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", newline="", encoding="utf-8", dir=path.parent,
                                     prefix=f".{path.name}.", delete=False) as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history_rows(journal))
    os.replace(handle.name, path)
    return path


def check_journal(journal: Journal) -> list[str]:
    """Integrity check: the problems found, empty when the journal and its files are sound.

    Runs ``PRAGMA integrity_check`` and ``foreign_key_check``; every ``done`` trial must have its
    metrics and its code and weights files (and those of its rungs and references) inside the
    run directory with the sha256 recorded when they finished. Reads files, executes nothing.
    """
    try:
        integrity, orphans = journal.sqlite_checks()
        done = journal.individuals("done")
    except (sqlite3.DatabaseError, CorruptJournalError) as exc:
        return [f"the journal {journal.path} is corrupt: {exc}"]
    problems = [f"integrity_check: {line}" for line in integrity if line != "ok"]
    problems += [f"individual {ident} names a parent that is not in the journal"
                 for ident in orphans]
    for trial in done:
        problems += _check_done(journal.run_dir, trial)
    return problems


def _check_done(run_dir: Path, trial: Trial) -> list[str]:
    problems = [f"individual {trial.id} is done but has no {name}"
                for name in ("params", "flops", "val_accuracy", "train_seconds")
                if getattr(trial, name) is None]
    files = [("code", trial.code_path, trial.code_sha256),
             ("weights", trial.weights_path, trial.weights_sha256)]
    files += [(f"rung-{r.rung} weights", r.weights, r.weights_sha256)
              for r in trial.rungs if r.weights]
    files += [(f"generation-{r.rung} reference weights", r.weights, r.weights_sha256)
              for r in trial.references if r.weights]
    for kind, rel, recorded in files:
        what = f"individual {trial.id}'s {kind} file {rel}"
        try:
            path = run_dir / _relative_path(rel)
        except ValueError:
            problems.append(f"{what} is outside the run directory")
            continue
        if not path.is_file():
            problems.append(f"{what} is missing")
        elif (actual := _sha256(path, sync=False)) != recorded:
            problems.append(f"{what} has changed since it finished "
                            f"(sha256 {actual}, the journal says {recorded})")
    return problems


def check(run_dir: str | os.PathLike[str]) -> list[str]:
    """Open ``run_dir``'s journal read-only and return :func:`check_journal`'s problems.

    A folder that is not a run or whose journal cannot be opened is one problem, not an exception.
    """
    try:
        with Journal.open(run_dir, readonly=True) as journal:
            return check_journal(journal)
    except JournalError as exc:
        return [str(exc)]
