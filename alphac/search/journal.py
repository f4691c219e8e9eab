"""The search's durable journal: one SQLite database per run directory, ``RUN_DIR/journal.sqlite``.

The journal holds the run (settings, the seed model's identity, when and by which alphac it was
made) and every individual of the search with its status (``queued`` -> ``running`` -> ``done`` or
``failed``), so that ``--resume`` continues exactly where a run stopped. Every event (add, start,
finish, fail, requeue) is one transaction.

Durability. WAL mode with ``synchronous=FULL``: every commit fsyncs the WAL, so a committed event
survives power loss and an OS crash, not only a killed process. (``NORMAL`` in WAL mode already
survives SIGKILL, because the WAL lives in the OS page cache, but may lose the last commits when the
machine loses power.) A candidate trains for seconds to hours and costs three events, and one fsync
costs milliseconds, so the stronger guarantee is cheap against the search's 2% overhead goal.
``finish`` also fsyncs the candidate's code and weights files (and their folders) before it commits
``done``, so a ``done`` row never points at a file that a power loss could take away.

Successive halving and budgets. :meth:`Journal.promote` records a ``done`` individual's longer
training at a higher rung and :meth:`Journal.reference` the seed's equal-training references,
both in the ``rungs`` table (schema 4; with the weights file's sha256), read back as
:attr:`Trial.rungs` and :attr:`Trial.references`. ``sessions`` holds the wall time of each search session (a run, then each resume) up to its last :meth:`heartbeat`, so a
``--budget`` counts the whole run across resumes (:meth:`elapsed_seconds`).

Concurrency. One writer: a writer takes an exclusive ``flock`` on ``RUN_DIR/journal.lock`` (the
kernel drops it when the process dies, even by SIGKILL), so a second ``--resume`` of a live run is
refused instead of interleaving. Readers (``alphac report``) open with ``readonly=True`` at any time;
WAL lets them read while the writer writes, and a busy timeout covers checkpoints. Within the
writer process a lock serializes the threads that share one ``Journal``.

Trust. No pickles: models are files the caller writes (code, and weights that load with
``torch.load(..., weights_only=True)``); the journal stores their paths (relative to the run
directory, never leaving it) and, once done, their sha256. Opening a journal runs SQLite's own
checks and reads JSON; it executes nothing from the run directory (``trusted_schema`` is off, a
journal with triggers or views is refused, and SQLite extensions stay disabled).

Example::

    with Journal.create(run_dir, settings, seed_identity) as journal:
        seed = journal.add(None, None, 0, fingerprint)       # candidates/000001/{model.py,weights.pt}
        journal.start(seed, "worker-0")
        journal.finish(seed, params=p, flops=f, latency_ms=None, val_accuracy=0.91,
                       train_seconds=12.0)
    with Journal.open(run_dir, expect_identity=seed_identity) as journal:   # --resume
        journal.requeue_running()
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO, Any

from alphac import __version__
from alphac.errors import RunDirError, UserError
from alphac.search.objectives import OBJECTIVES

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the single-writer lock is skipped
    fcntl = None  # type: ignore[assignment]

JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "journal.lock"
#: Stored in ``PRAGMA user_version``; a journal with a larger one was written by a newer alphac.
SCHEMA_VERSION = 4
#: ``PRAGMA application_id`` of an alphac journal ("alph"), so another SQLite file is not mistaken.
APPLICATION_ID = 0x616C7068
STATUSES = ("queued", "running", "done", "failed")
BUSY_TIMEOUT_S = 30.0
#: Which seed-identity keys must agree for ``--resume`` (see :func:`identity_differences`).
IDENTITY_KEYS = ("source", "sha256", "target", "input_shape")
HISTORY_COLUMNS = (
    "id", "parent", "generation", "mutation_kind", "mutation_block", "seed", "fingerprint",
    "params", "flops", "latency_ms", "val_accuracy", "rung", "rung_val_accuracy",
    "test_accuracy", "train_seconds",
    "attempts", "worker", "queued_at", "started_at", "finished_at", "code_path", "weights_path",
)

#: Schema 4 added ``rungs``: a trial's longer trainings (successive halving, kind ``rung``,
#: numbered from 1) and the seed's equal-training references (kind ``reference``, numbered by
#: generation), which older journals kept in the trial's ``extra`` JSON. A writer opening an
#: older journal moves them into the table (:func:`_move_rungs`); read-only, they are read from
#: ``extra`` where they are.
_MIGRATE_TO_4 = """
CREATE TABLE IF NOT EXISTS rungs (
    trial INTEGER NOT NULL REFERENCES individuals(id),
    kind TEXT NOT NULL CHECK (kind IN ('rung', 'reference')),
    number INTEGER NOT NULL CHECK (number >= 1),
    val_accuracy REAL,
    train_seconds REAL NOT NULL,
    weights TEXT,
    weights_sha256 TEXT,
    reason TEXT,
    PRIMARY KEY (trial, kind, number)
);
"""
_SCHEMA = """
CREATE TABLE run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    created_at REAL NOT NULL,
    alphac_version TEXT NOT NULL,
    settings TEXT NOT NULL,
    seed_identity TEXT NOT NULL
);
CREATE TABLE individuals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER REFERENCES individuals(id),
    generation INTEGER NOT NULL CHECK (generation >= 0),
    mutation TEXT,
    seed INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    code_path TEXT NOT NULL,
    code_sha256 TEXT,
    weights_path TEXT NOT NULL,
    weights_sha256 TEXT,
    properties TEXT NOT NULL,
    params INTEGER,
    flops INTEGER,
    latency_ms REAL,
    val_accuracy REAL,
    test_accuracy REAL,
    train_seconds REAL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker TEXT,
    extra TEXT NOT NULL
);
CREATE INDEX individuals_by_status ON individuals(status);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE trial_values (
    trial INTEGER NOT NULL REFERENCES individuals(id),
    objective TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (trial, objective)
);
""" + _MIGRATE_TO_4
#: Schema 2 added ``sessions`` (the search's wall time across resumes, for ``--budget``); a
#: schema-1 journal gains it when a writer opens it.
_MIGRATE_1_TO_2 = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""
#: Schema 3 added ``trial_values`` (every objective's value of a finished trial, by name, so
#: an objective needs no column of its own); schema-1 and -2 journals gain it when a writer
#: opens them, and read as having no extra values.
_MIGRATE_TO_3 = """
CREATE TABLE IF NOT EXISTS trial_values (
    trial INTEGER NOT NULL REFERENCES individuals(id),
    objective TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (trial, objective)
);
"""
#: ``extra`` keys of schema-3 journals, by the kind of rung they hold, and the entry's number.
_EXTRA_RUNGS = {"rung": ("rungs", "rung"), "reference": ("references", "generation")}


class JournalError(UserError):
    """A run directory's journal cannot be used (exit code 9 unless a subclass says otherwise)."""

    exit_code = 9


class NotARunError(JournalError):
    """``--resume`` of a folder that holds no journal."""

    exit_code = 2


class RunExistsError(JournalError):
    """A new run in a folder that already holds one."""

    exit_code = 2


class RunDirUnwritableError(JournalError, RunDirError):
    """The run directory cannot be created or written."""

    exit_code = 2


class RunMismatchError(JournalError):
    """``--resume`` with another model or target than the run was made with."""

    exit_code = 2


class RunInUseError(JournalError):
    """Another process is writing the run (it holds ``journal.lock``)."""


class CorruptJournalError(JournalError):
    """``journal.sqlite`` is not a SQLite database, fails its integrity check or lacks tables."""


class JournalVersionError(JournalError):
    """The journal was written by a newer alphac (a larger schema version)."""


class JournalStateError(RuntimeError):
    """An event that the individual's status does not allow (a bug in the caller, not user input)."""


class TrialState(StrEnum):
    """Where a trial is: ``queued`` -> ``running`` -> ``done`` or ``failed`` (a str, so
    ``trial.status == "done"`` reads as before)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Rung:
    """A longer training of a ``done`` trial (successive halving), or one of the seed's
    equal-training references (``rung`` is then the generation); ``val_accuracy`` None: it
    failed, ``reason`` says why."""

    rung: int
    val_accuracy: float | None
    train_seconds: float
    weights: str | None = None
    weights_sha256: str | None = None
    reason: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], key: str = "rung") -> Rung:
        return cls(int(entry[key]), entry.get("val_accuracy"),
                   float(entry.get("train_seconds") or 0.0), entry.get("weights"),
                   entry.get("weights_sha256"), entry.get("reason"))


@dataclass(frozen=True)
class Trial:
    """One trial of the search (a row of the journal). JSON fields come back as JSON values
    (tuples as lists).

    Paths are relative to the run directory (posix). ``code_sha256``/``weights_sha256`` are set by
    :meth:`Journal.finish`; the metrics are None until then (``test_accuracy`` may stay None).
    ``values``: every objective's value by name (:data:`alphac.search.objectives.OBJECTIVES`),
    the column-backed ones included.
    """

    id: int
    parent: int | None
    generation: int
    mutation: dict[str, Any] | None
    seed: int
    fingerprint: str
    code_path: str
    code_sha256: str | None
    weights_path: str
    weights_sha256: str | None
    properties: dict[str, Any]
    params: int | None
    flops: int | None
    latency_ms: float | None
    val_accuracy: float | None
    test_accuracy: float | None
    train_seconds: float | None
    status: str
    reason: str | None
    attempts: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    extra: dict[str, Any]
    values: dict[str, float] = field(default_factory=dict)
    #: The longer trainings after the proxy, from rung 1 (rung 0 is the row's own
    #: ``val_accuracy``).
    rungs: tuple[Rung, ...] = ()
    #: The seed's equal-training references, by generation from 1 (empty for a child).
    references: tuple[Rung, ...] = ()

    @property
    def state(self) -> TrialState:
        return TrialState(self.status)


#: The name the search used before trials were typed.
Individual = Trial

_COLUMNS = tuple(f.name for f in fields(Trial) if f.name not in ("values", "rungs",
                                                                   "references"))

_JSON_COLUMNS = ("mutation", "properties", "extra")
_REQUIRED_COLUMNS = {"run": {"created_at", "alphac_version", "settings", "seed_identity"},
                     "individuals": set(_COLUMNS)}
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM individuals"


class Journal:
    """The journal of one run directory; make one with :meth:`create` or :meth:`open`."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, lock_file: IO[str] | None,
                 run_row: sqlite3.Row, *, readonly: bool) -> None:
        self.run_dir = run_dir
        self.path = run_dir / JOURNAL_NAME
        self.readonly = readonly
        self._conn = conn
        self._lock_file = lock_file
        self._mutex = threading.RLock()
        self.created_at: float = run_row["created_at"]
        self.alphac_version: str = run_row["alphac_version"]
        self._settings = _loads_object(run_row["settings"], "settings", self.path)
        self._identity = _loads_object(run_row["seed_identity"], "seed_identity", self.path)

    # -- making and opening -------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | os.PathLike[str], settings: Mapping[str, Any],
               seed_identity: Mapping[str, Any]) -> Journal:
        """Start the journal of a new run in ``run_dir`` (made if missing) and open it for writing.

        Pre: ``settings`` and ``seed_identity`` are JSON objects; ``seed_identity`` has ``source``
        and ``target``. Post: ``run_dir/journal.sqlite`` exists complete or not at all (it is built
        under a temporary name and linked into place), and this process is the run's writer.
        Raises RunExistsError when ``run_dir`` already holds a journal, RunDirUnwritableError when
        it cannot be made or written.
        """
        run_dir = Path(run_dir)
        settings_json = _dumps_object(settings, "settings")
        identity_json = _dumps_object(seed_identity, "seed_identity")
        missing = [k for k in ("source", "target") if k not in seed_identity]
        if missing:
            raise ValueError(f"seed_identity lacks {', '.join(missing)}")
        final = run_dir / JOURNAL_NAME
        if final.exists():
            raise _run_exists(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_new_journal(final, settings_json, identity_json)
        except FileExistsError as exc:
            if final.exists():
                raise _run_exists(run_dir) from exc
            raise _unwritable(run_dir, exc) from exc
        except (OSError, sqlite3.Error) as exc:
            raise _unwritable(run_dir, exc) from exc
        return cls._open_checked(run_dir, readonly=False)

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], *,
             expect_identity: Mapping[str, Any] | None = None,
             expect_settings_keys: Iterable[str] = (), readonly: bool = False) -> Journal:
        """Open an existing run's journal (``--resume``, or ``readonly=True`` for ``alphac report``).

        Pre: nothing; every problem is reported as a JournalError. Post: the journal passed
        ``PRAGMA integrity_check`` and has this alphac's tables; when ``expect_identity`` is given,
        its model source/sha256/target/input shape agree with the run's (see
        :func:`identity_differences`), and the run's settings hold every ``expect_settings_keys``.
        A writer holds the run's lock until :meth:`close`. Raises NotARunError,
        CorruptJournalError, JournalVersionError, RunMismatchError, RunInUseError.
        """
        run_dir = Path(run_dir)
        if not (run_dir / JOURNAL_NAME).is_file():
            raise NotARunError(
                f"{run_dir} is not a run: it holds no {JOURNAL_NAME}",
                hint="check the path, or start a new run there without --resume")
        journal = cls._open_checked(run_dir, readonly=readonly)
        try:
            journal._expect(expect_identity, expect_settings_keys)
        except BaseException:
            journal.close()
            raise
        return journal

    @classmethod
    def _open_checked(cls, run_dir: Path, *, readonly: bool) -> Journal:
        path = run_dir / JOURNAL_NAME
        lock_file = None if readonly else _acquire_writer_lock(run_dir)
        try:
            conn = _connect(path, readonly=readonly)
            try:
                run_row = _verify(conn, path)
                if not readonly:
                    _configure_writer(conn, path)
                return cls(run_dir, conn, lock_file, run_row, readonly=readonly)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock_file is not None:
                lock_file.close()
            raise

    def _expect(self, identity: Mapping[str, Any] | None, settings_keys: Iterable[str]) -> None:
        if identity is not None:
            differences = identity_differences(self._identity, identity)
            if differences:
                raise RunMismatchError(
                    f"{self.run_dir} is a run of another model or target: "
                    + "; ".join(differences),
                    hint="resume with the model and --target the run was started with, or start "
                         "a new run with another --out")
        missing = [k for k in settings_keys if k not in self._settings]
        if missing:
            raise RunMismatchError(
                f"the settings of the run in {self.run_dir} lack {', '.join(missing)} (made by "
                f"alphac {self.alphac_version})", hint="start a new run with another --out")

    def close(self) -> None:
        """Close the database and release the writer lock; closing twice is harmless."""
        with self._mutex:
            self._conn.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writer"
        return f"Journal({str(self.run_dir)!r}, {mode})"

    # -- the run ------------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """The run's settings (a copy)."""
        return copy.deepcopy(self._settings)

    @property
    def seed_identity(self) -> dict[str, Any]:
        """The seed model's identity (a copy): source, sha256, input_shape, target, ..."""
        return copy.deepcopy(self._identity)

    @property
    def schema_version(self) -> int:
        with self._mutex:
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    # -- events -------------------------------------------------------------------------------

    def add(self, parent: int | None, mutation: Mapping[str, Any] | None, seed: int,
            fingerprint: str, code_path: str | os.PathLike[str] | None = None,
            weights_path: str | os.PathLike[str] | None = None,
            properties: Mapping[str, Any] | None = None, *, generation: int | None = None,
            extra: Mapping[str, Any] | None = None) -> int:
        """Queue a new individual and return its id (ids grow in insertion order, from 1).

        Pre: ``parent`` is None (the seed) or an id in the journal; paths are relative to the run
        directory and stay inside it; None means ``candidates/{id:06d}/model.py`` and
        ``.../weights.pt``. The files may be written after ``add`` (the id names the folder), but
        before :meth:`finish`. Post: the individual is ``queued`` with 0 attempts, its generation is
        ``generation`` or the parent's plus one (0 for the seed).
        """
        _require_int(seed, "seed")
        if not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str, not {type(fingerprint).__name__}")
        code = None if code_path is None else _relative_path(code_path)
        weights = None if weights_path is None else _relative_path(weights_path)
        row = (parent, _dumps(mutation, "mutation"), seed, fingerprint, code or "",
               weights or "", _dumps_object(properties or {}, "properties"), time.time(),
               _dumps_object(extra or {}, "extra"))
        with self._write() as conn:
            gen = generation if generation is not None else self._child_generation(conn, parent)
            ident = conn.execute(
                "INSERT INTO individuals (parent, mutation, seed, fingerprint, code_path, "
                "weights_path, properties, queued_at, extra, generation, status, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0)", (*row, gen)).lastrowid
            if code is None or weights is None:
                folder = f"candidates/{ident:06d}"
                conn.execute("UPDATE individuals SET code_path = ?, weights_path = ? WHERE id = ?",
                             (code or f"{folder}/model.py", weights or f"{folder}/weights.pt",
                              ident))
        return ident

    def next_id(self) -> int:
        """The id :meth:`add` gives the next trial (ids grow by one from 1; a trial's seeds
        derive from its id, so the search asks before it mutates)."""
        with self._mutex:
            return int(self._conn.execute(
                "SELECT COALESCE(MAX(id), 0) + 1 FROM individuals").fetchone()[0])

    def start(self, ident: int, worker: str) -> None:
        """Mark a queued individual ``running`` on ``worker``.

        Pre: status ``queued``. Post: ``running``, attempts one more, started_at now.
        """
        with self._write() as conn:
            _, attempts = self._require_status(conn, ident, ("queued",), "start")
            self._set(conn, ident, status="running", attempts=attempts + 1,
                      started_at=time.time(), finished_at=None, worker=str(worker))

    def finish(self, ident: int, *, params: int, flops: int, latency_ms: float | None,
               val_accuracy: float, test_accuracy: float | None = None, train_seconds: float,
               extra: Mapping[str, Any] | None = None,
               values: Mapping[str, float | None] | None = None) -> None:
        """Record a running individual's results and mark it ``done``.

        Pre: status ``running``; its code and weights files exist under the run directory;
        accuracies are fractions in [0, 1]; counts and times are finite and non-negative. Post:
        ``done`` with the metrics, finished_at now, the sha256 of both files (fsynced first),
        ``extra`` merged into the individual's extra, and each objective's value of ``values``
        (None: not measured) in ``trial_values``.
        """
        stored = {str(k): float(v) for k, v in (values or {}).items() if v is not None}
        for name, value in stored.items():
            _require_finite(value, f"the value of {name}")
        _require_int(params, "params", minimum=0)
        _require_int(flops, "flops", minimum=0)
        _require_fraction(val_accuracy, "val_accuracy")
        if test_accuracy is not None:
            _require_fraction(test_accuracy, "test_accuracy")
        _require_finite(train_seconds, "train_seconds")
        if latency_ms is not None:
            _require_finite(latency_ms, "latency_ms")
        before = self.get(ident)
        if before.status != "running":  # before hashing files that may not exist yet
            raise _state_error(ident, before.status, "finish", ("running",))
        digests = [self._sync_and_digest(ident, kind, rel)
                   for kind, rel in (("code", before.code_path), ("weights", before.weights_path))]
        merged = _dumps_object({**before.extra, **(extra or {})}, "extra")
        with self._write() as conn:
            self._require_status(conn, ident, ("running",), "finish")
            self._set(conn, ident, status="done", params=params, flops=flops,
                      latency_ms=latency_ms, val_accuracy=val_accuracy,
                      test_accuracy=test_accuracy, train_seconds=train_seconds,
                      code_sha256=digests[0], weights_sha256=digests[1], extra=merged,
                      finished_at=time.time(), reason=None)
            conn.executemany("INSERT OR REPLACE INTO trial_values (trial, objective, value) "
                             "VALUES (?, ?, ?)", [(ident, k, v) for k, v in stored.items()])

    def fail(self, ident: int, reason: str) -> None:
        """Mark a queued or running individual ``failed`` with ``reason`` (finished_at now)."""
        with self._write() as conn:
            self._require_status(conn, ident, ("queued", "running"), "fail")
            self._set(conn, ident, status="failed", reason=str(reason), finished_at=time.time())

    def requeue(self, ident: int, max_attempts: int = 2) -> bool:
        """A running individual's worker died: queue it again, or fail it after ``max_attempts``.

        Pre: status ``running``. Post: ``queued`` (started_at cleared) and True when it was
        started fewer than ``max_attempts`` times, else ``failed`` with reason "worker died twice"
        (for 2) and False.
        """
        with self._write() as conn:
            _, attempts = self._require_status(conn, ident, ("running",), "requeue")
            return self._release(conn, ident, attempts, max_attempts)

    def requeue_running(self, max_attempts: int = 2) -> list[int]:
        """At resume: apply :meth:`requeue` to every ``running`` individual, in one transaction.

        Post: no individual is ``running``; returns the ids put back in the queue (ascending);
        those that reached ``max_attempts`` are ``failed`` instead and not in the list.
        """
        with self._write() as conn:
            rows = conn.execute("SELECT id, attempts FROM individuals WHERE status = 'running' "
                                "ORDER BY id").fetchall()
            return [ident for ident, attempts in rows
                    if self._release(conn, ident, attempts, max_attempts)]

    def promote(self, ident: int, rung: int, *, val_accuracy: float | None,
                train_seconds: float, weights_path: str | None = None,
                reason: str | None = None) -> None:
        """Record a ``done`` individual's longer training (successive halving, rung ``rung``).

        Pre: status ``done``; ``rung`` is one more than its last recorded rung (0 is the proxy
        recorded by :meth:`finish`); ``weights_path`` (relative, inside the run directory) holds
        the state after this rung when ``val_accuracy`` is given; ``reason`` says why the rung
        failed when it is None. Post: the ``rungs`` table gains the rung (``kind`` ``rung``:
        val_accuracy, train_seconds, weights, weights_sha256, reason), read back as
        :attr:`Trial.rungs`; the row's own ``val_accuracy`` stays the proxy's (rung 0)."""
        _require_int(rung, "rung", minimum=1)
        _require_finite(train_seconds, "train_seconds")
        entry: dict[str, Any] = {"rung": rung, "val_accuracy": val_accuracy,
                                 "train_seconds": train_seconds, "reason": reason}
        before = self.get(ident)
        if before.status != "done":  # before hashing files that may not exist
            raise _state_error(ident, before.status, "promote", ("done",))
        _require_next_rung(ident, len(before.rungs), rung)
        if val_accuracy is not None:
            _require_fraction(val_accuracy, "val_accuracy")
            if weights_path is None:
                raise ValueError("a finished rung needs its weights_path")
            rel = _relative_path(weights_path)
            entry |= {"weights": rel, "weights_sha256": self._sync_and_digest(ident, "weights",
                                                                              rel)}
        with self._write() as conn:
            self._require_status(conn, ident, ("done",), "promote")
            _require_next_rung(ident, _last_number(conn, ident, "rung"), rung)
            _insert_rung(conn, ident, "rung", rung, entry)

    def reference(self, ident: int, generation: int, *, val_accuracy: float | None,
                  train_seconds: float, weights_path: str | None = None,
                  reason: str | None = None) -> None:
        """Record the seed's equal-training reference for ``generation``: the seed fine-tuned
        ``generation`` times with the children's recipe, as a child of that generation is.

        Pre: ``ident`` is the seed, ``done``; ``generation`` is one more than its last recorded
        reference (from 1); ``weights_path`` holds the reference's state when ``val_accuracy``
        is given. Post: the ``rungs`` table gains it (``kind`` ``reference``, numbered by
        generation), read back as :attr:`Trial.references`."""
        _require_int(generation, "generation", minimum=1)
        _require_finite(train_seconds, "train_seconds")
        entry: dict[str, Any] = {"generation": generation, "val_accuracy": val_accuracy,
                                 "train_seconds": train_seconds, "reason": reason}
        before = self.get(ident)
        if before.status != "done":
            raise _state_error(ident, before.status, "reference", ("done",))
        if val_accuracy is not None:
            _require_fraction(val_accuracy, "val_accuracy")
            if weights_path is None:
                raise ValueError("a finished reference needs its weights_path")
            rel = _relative_path(weights_path)
            entry |= {"weights": rel, "weights_sha256": self._sync_and_digest(ident, "weights",
                                                                              rel)}
        with self._write() as conn:
            self._require_status(conn, ident, ("done",), "reference")
            last = _last_number(conn, ident, "reference")
            if generation != last + 1:
                raise JournalStateError(f"individual {ident}: reference generation {generation} "
                                        f"after {last}")
            _insert_rung(conn, ident, "reference", generation, entry)

    def begin_session(self) -> int:
        """A search session starts (a run or a resume); its id, for :meth:`heartbeat`."""
        now = time.time()
        with self._write() as conn:
            return conn.execute("INSERT INTO sessions (started_at, last_seen) VALUES (?, ?)",
                                (now, now)).lastrowid

    def heartbeat(self, session: int) -> None:
        """The session is alive now: its time counts towards :meth:`elapsed_seconds`."""
        with self._write() as conn:
            conn.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (time.time(), session))

    def elapsed_seconds(self) -> float:
        """The search's wall time over all its sessions, each up to its last heartbeat."""
        with self._mutex:
            try:
                row = self._conn.execute(
                    "SELECT COALESCE(SUM(last_seen - started_at), 0) FROM sessions").fetchone()
            except sqlite3.OperationalError:  # a schema-1 journal opened read-only
                return 0.0
        return float(row[0])

    # -- reading ------------------------------------------------------------------------------

    def get(self, ident: int) -> Individual:
        """The individual ``ident``; KeyError when the journal has none."""
        with self._mutex:
            row = self._conn.execute(f"{_SELECT} WHERE id = ?", (ident,)).fetchone()
        if row is None:
            raise KeyError(f"no individual {ident} in the journal {self.path}")
        rungs = self._rungs(ident)
        return _individual(row, self.path, self._values(ident),
                           None if rungs is None else rungs.get(ident, {}))

    def individuals(self, status: str | None = None) -> list[Individual]:
        """Every individual (or those with ``status``), by ascending id."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        query, args = (_SELECT, ()) if status is None else (f"{_SELECT} WHERE status = ?",
                                                            (status,))
        with self._mutex:
            rows = self._conn.execute(f"{query} ORDER BY id", args).fetchall()
        values, rungs = self._values(), self._rungs()
        return [_individual(row, self.path, values.get(row["id"], {}),
                            None if rungs is None else rungs.get(row["id"], {}))
                for row in rows]

    def _rungs(self, ident: int | None = None) -> dict[int, dict[str, list[Rung]]] | None:
        """The ``rungs`` table by trial and kind (of ``ident`` alone if given), in number
        order; None in a journal older than schema 4 opened read-only (its rungs are in
        ``extra``)."""
        query = ("SELECT trial, kind, number, val_accuracy, train_seconds, weights, "
                 "weights_sha256, reason FROM rungs")
        args: tuple = ()
        if ident is not None:
            query, args = f"{query} WHERE trial = ?", (ident,)
        with self._mutex:
            try:
                rows = self._conn.execute(f"{query} ORDER BY trial, kind, number", args).fetchall()
            except sqlite3.OperationalError:
                return None
        found: dict[int, dict[str, list[Rung]]] = {}
        for trial, kind, number, acc, seconds, weights, digest, reason in rows:
            found.setdefault(trial, {}).setdefault(kind, []).append(
                Rung(number, acc, float(seconds), weights, digest, reason))
        return found

    def _values(self, ident: int | None = None) -> Any:
        """``trial_values`` by trial (or of ``ident``); empty in a journal older than schema 3
        opened read-only."""
        query = "SELECT trial, objective, value FROM trial_values"
        args: tuple = ()
        if ident is not None:
            query, args = f"{query} WHERE trial = ?", (ident,)
        with self._mutex:
            try:
                rows = self._conn.execute(query, args).fetchall()
            except sqlite3.OperationalError:
                return {}
        by_trial: dict[int, dict[str, float]] = {}
        for trial, objective, value in rows:
            by_trial.setdefault(trial, {})[objective] = value
        return by_trial.get(ident, {}) if ident is not None else by_trial

    def counts(self) -> dict[str, int]:
        """How many individuals have each status (every status present, zeros included)."""
        with self._mutex:
            rows = self._conn.execute(
                "SELECT status, COUNT(*) FROM individuals GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | dict(rows)

    def sqlite_checks(self) -> tuple[list[str], list[int]]:
        """SQLite's ``integrity_check`` lines and the trials whose parent is missing."""
        with self._mutex:
            integrity = [r[0] for r in self._conn.execute("PRAGMA integrity_check")]
            orphans = self._conn.execute("PRAGMA foreign_key_check(individuals)").fetchall()
        return integrity, [row[1] for row in orphans]

    # -- what readers derive (alphac.search.journal_reader) ------------------------------------

    def history_rows(self) -> list[dict[str, Any]]:
        """One row per ``done`` trial, in the order they finished, keyed by HISTORY_COLUMNS."""
        from alphac.search.journal_reader import history_rows

        return history_rows(self)

    def write_history_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`history_rows` as CSV to ``path`` (replaced atomically); returns the path."""
        from alphac.search.journal_reader import write_history_csv

        return write_history_csv(self, path)

    def check(self) -> list[str]:
        """The journal's and its files' problems, empty when sound
        (:func:`alphac.search.journal_reader.check_journal`)."""
        from alphac.search.journal_reader import check_journal

        return check_journal(self)

    # -- helpers ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One event = one transaction; BEGIN IMMEDIATE takes the write lock up front."""
        if self.readonly:
            raise JournalStateError(f"{self.path} was opened read-only")
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _child_generation(conn: sqlite3.Connection, parent: int | None) -> int:
        if parent is None:
            return 0
        row = conn.execute("SELECT generation FROM individuals WHERE id = ?", (parent,)).fetchone()
        if row is None:
            raise KeyError(f"no individual {parent} (the parent) in the journal")
        return row[0] + 1

    @staticmethod
    def _require_status(conn: sqlite3.Connection, ident: int, allowed: tuple[str, ...],
                        verb: str) -> tuple[str, int]:
        row = conn.execute("SELECT status, attempts FROM individuals WHERE id = ?",
                           (ident,)).fetchone()
        if row is None:
            raise KeyError(f"no individual {ident} in the journal")
        if row[0] not in allowed:
            raise _state_error(ident, row[0], verb, allowed)
        return row[0], row[1]

    @staticmethod
    def _set(conn: sqlite3.Connection, ident: int, **values: Any) -> None:
        # The keys are this module's own column names, never user input.
        assignments = ", ".join(f"{name} = ?" for name in values)
        conn.execute(f"UPDATE individuals SET {assignments} WHERE id = ?",
                     (*values.values(), ident))

    def _release(self, conn: sqlite3.Connection, ident: int, attempts: int,
                 max_attempts: int) -> bool:
        if attempts >= max_attempts:
            times = {1: "once", 2: "twice"}.get(attempts, f"{attempts} times")
            self._set(conn, ident, status="failed", reason=f"worker died {times}",
                      finished_at=time.time())
            return False
        self._set(conn, ident, status="queued", started_at=None)
        return True

    def _sync_and_digest(self, ident: int, kind: str, rel: str) -> str:
        path = self.run_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"cannot finish individual {ident}: its {kind} file {path} "
                                    "does not exist; write the candidate's files before finish()")
        digest = _sha256(path, sync=True)
        folder = path.parent
        while True:  # the new files' directory entries, up to the run directory
            _fsync_dir(folder)
            if folder == self.run_dir or folder == folder.parent:
                return digest
            folder = folder.parent


def check(run_dir: str | os.PathLike[str]) -> list[str]:
    """:func:`alphac.search.journal_reader.check` (open read-only, list the problems)."""
    from alphac.search.journal_reader import check as check_run

    return check_run(run_dir)


def identity_differences(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """How ``expected`` differs from the run's ``stored`` seed identity, one line per key.

    Compares the IDENTITY_KEYS present in ``expected``, after a JSON round trip (so tuples equal
    lists). The source path is not compared when both sides carry the same sha256: a model file
    that moved with its bytes unchanged is the same model.
    """
    stored, expected = json.loads(json.dumps(stored)), json.loads(json.dumps(expected))
    same_bytes = stored.get("sha256") is not None and stored.get("sha256") == expected.get("sha256")
    lines = []
    for key in IDENTITY_KEYS:
        if key not in expected or (key == "source" and same_bytes):
            continue
        if stored.get(key) != expected[key]:
            lines.append(f"{key}: the run has {stored.get(key)!r}, this command gives "
                         f"{expected[key]!r}")
    return lines


def _last_number(conn: sqlite3.Connection, ident: int, kind: str) -> int:
    """The number of ``ident``'s last ``kind`` row in ``rungs`` (0 when it has none)."""
    return int(conn.execute("SELECT COALESCE(MAX(number), 0) FROM rungs WHERE trial = ? AND "
                            "kind = ?", (ident, kind)).fetchone()[0])


def _insert_rung(conn: sqlite3.Connection, ident: int, kind: str, number: int,
                 entry: Mapping[str, Any]) -> None:
    conn.execute("INSERT INTO rungs (trial, kind, number, val_accuracy, train_seconds, weights, "
                 "weights_sha256, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (ident, kind, number, entry.get("val_accuracy"), entry["train_seconds"],
                  entry.get("weights"), entry.get("weights_sha256"), entry.get("reason")))


def _move_rungs(conn: sqlite3.Connection) -> None:
    """Move the rungs and references an older journal kept in ``extra`` into ``rungs``
    (inside the caller's transaction; entries already there are left as they are)."""
    rows = conn.execute("SELECT id, extra FROM individuals WHERE extra LIKE '%\"rungs\"%' OR "
                        "extra LIKE '%\"references\"%'").fetchall()
    for ident, text in rows:
        extra = json.loads(text)
        for kind, (key, number) in _EXTRA_RUNGS.items():
            for entry in extra.pop(key, []):
                conn.execute("INSERT OR IGNORE INTO rungs (trial, kind, number, val_accuracy, "
                             "train_seconds, weights, weights_sha256, reason) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?)",
                             (ident, kind, int(entry[number]), entry.get("val_accuracy"),
                              float(entry.get("train_seconds") or 0.0), entry.get("weights"),
                              entry.get("weights_sha256"), entry.get("reason")))
        conn.execute("UPDATE individuals SET extra = ? WHERE id = ?",
                     (_dumps_object(extra, "extra"), ident))


def _require_next_rung(ident: int, last: int, rung: int) -> None:
    if rung != last + 1:
        raise JournalStateError(f"cannot promote individual {ident} to rung {rung}: its last "
                                f"rung is {last}")


def _state_error(ident: int, status: str, verb: str, allowed: tuple[str, ...]) -> JournalStateError:
    return JournalStateError(f"cannot {verb} individual {ident}: it is {status}, {verb} needs "
                             f"{' or '.join(allowed)}")


def _run_exists(run_dir: Path) -> RunExistsError:
    return RunExistsError(f"{run_dir} already holds a run ({JOURNAL_NAME})",
                          hint="continue it with --resume, or choose another --out")


def _unwritable(run_dir: Path, exc: BaseException) -> RunDirUnwritableError:
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if run_dir.exists() and not run_dir.is_dir():
        detail = "it is a file, not a folder"
    return RunDirUnwritableError(f"cannot write the run directory {run_dir}: {detail}",
                                 hint="choose an --out in a folder you can write to")


def _corrupt(path: Path, detail: str) -> CorruptJournalError:
    return CorruptJournalError(
        f"the journal {path} is corrupt: {detail}",
        hint="this run cannot be resumed; start a new run with another --out (the candidates' "
             "files in the run directory are untouched), or restore journal.sqlite from a backup")


def _write_new_journal(final: Path, settings_json: str, identity_json: str) -> None:
    """Build the journal under a temporary name, then link it into place (never half-made)."""
    tmp = final.parent / f".journal-{os.getpid()}-{secrets.token_hex(6)}.tmp"
    try:
        # Made here rather than by mkstemp so its mode follows the umask (readers of other users).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
            conn.execute("INSERT INTO run VALUES (1, ?, ?, ?, ?)",
                         (time.time(), __version__, settings_json, identity_json))
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        _fsync_file(tmp)
        try:
            os.link(tmp, final)  # fails if another process made a journal meanwhile
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links
            if final.exists():
                raise FileExistsError(final) from None
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def _acquire_writer_lock(run_dir: Path) -> IO[str] | None:
    if fcntl is None:  # pragma: no cover
        return None
    try:
        handle = open(run_dir / LOCK_NAME, "a+", encoding="utf-8")  # held until close()
    except OSError as exc:
        raise _unwritable(run_dir, exc) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunInUseError(f"{run_dir} is being written by another process (pid {holder})",
                            hint="wait for that search to end or stop it; `alphac report` can "
                                 "read the run meanwhile") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}",
                           hint="check that the file is readable") from exc
    conn.row_factory = sqlite3.Row
    # A journal is a file from disk: let its schema call no functions with side effects.
    conn.execute("PRAGMA trusted_schema = OFF")
    return conn


def _verify(conn: sqlite3.Connection, path: Path) -> sqlite3.Row:
    """The checks of :meth:`Journal.open`; returns the run's row."""
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        kinds = {row[0] for row in conn.execute("SELECT type FROM sqlite_master")}
        columns = {table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                   for table in _REQUIRED_COLUMNS}
        run_row = conn.execute("SELECT * FROM run WHERE id = 1").fetchone() if columns[
            "run"] >= _REQUIRED_COLUMNS["run"] else None
    except sqlite3.OperationalError as exc:  # cannot open, read-only folder, I/O: not corruption
        raise JournalError(f"cannot read the journal {path}: {exc}",
                           hint="check that the run directory is readable and writable") from exc
    except sqlite3.DatabaseError as exc:
        raise _corrupt(path, str(exc)) from exc
    if integrity != ["ok"]:
        raise _corrupt(path, "integrity check failed: " + "; ".join(integrity[:3]))
    if app_id != APPLICATION_ID:
        raise _corrupt(path, "it is a SQLite database but not an alphac journal")
    if version > SCHEMA_VERSION:
        raise JournalVersionError(
            f"the journal {path} was written by a newer alphac (journal schema {version}; this "
            f"alphac reads up to {SCHEMA_VERSION})", hint="upgrade alphac to resume this run")
    if kinds & {"trigger", "view"}:
        raise _corrupt(path, "it holds triggers or views, which alphac never writes")
    missing = [f"{table}.{name}" for table, names in _REQUIRED_COLUMNS.items()
               for name in sorted(names - columns[table])]
    if missing or run_row is None:
        raise _corrupt(path, f"it lacks {', '.join(missing) or 'the run row'}")
    return run_row


def _configure_writer(conn: sqlite3.Connection, path: Path) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise _corrupt(path, str(exc)) from exc
    if mode.lower() != "wal":
        raise JournalError(f"cannot put the journal {path} in WAL mode (got {mode})",
                           hint="keep run directories on a local filesystem")
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for script in (_MIGRATE_1_TO_2, _MIGRATE_TO_3, _MIGRATE_TO_4):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            _move_rungs(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _individual(row: sqlite3.Row, path: Path, stored: Mapping[str, float] | None = None,
                rungs: Mapping[str, list[Rung]] | None = None) -> Trial:
    """A Trial from its row, its ``trial_values`` (``stored``) and its ``rungs`` rows by kind
    (None: a journal older than schema 4, whose rungs are in ``extra``)."""
    values = {name: row[name] for name in _COLUMNS}
    try:
        for name in _JSON_COLUMNS:
            if values[name] is not None:
                values[name] = json.loads(values[name])
    except ValueError as exc:
        raise _corrupt(path, f"individual {values['id']}'s {name} is not JSON") from exc
    values["status"] = TrialState(values["status"])
    # the objectives kept in their own columns (older journals have only these)
    costs = {o.name: float(values[o.column]) for o in OBJECTIVES.values()
             if o.column in values and values[o.column] is not None}
    if rungs is None:
        extra = values["extra"] or {}
        rungs = {kind: [Rung.from_entry(e, number) for e in extra.get(key, [])]
                 for kind, (key, number) in _EXTRA_RUNGS.items()}
    return Trial(**values, values={**costs, **(stored or {})},
                 rungs=tuple(rungs.get("rung", ())), references=tuple(rungs.get("reference", ())))


def _dumps(value: Any, what: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serializable (no NaN): {exc}") from exc


def _dumps_object(value: Any, what: str) -> str:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping (a JSON object), not {type(value).__name__}")
    return _dumps(dict(value), what) or "{}"


def _loads_object(text: str, what: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise _corrupt(path, f"the run's {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise _corrupt(path, f"the run's {what} is not a JSON object")
    return value


def _relative_path(path: str | os.PathLike[str]) -> str:
    pure = PurePosixPath(Path(path).as_posix())
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"{str(path)!r}: a candidate's file must be given relative to the run "
                         "directory and stay inside it")
    return pure.as_posix()


def _require_int(value: Any, what: str, *, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")


def _require_finite(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be finite and >= 0, got {value}")


def _require_fraction(value: Any, what: str) -> None:
    _require_finite(value, what)
    if value > 1:
        raise ValueError(f"{what} is a fraction in [0, 1], got {value}")


def _sha256(path: Path, *, sync: bool) -> str:
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if sync:
            os.fsync(handle.fileno())
    return digest


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Best effort: some platforms and filesystems cannot open or fsync a directory.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
