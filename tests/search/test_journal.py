"""The search's journal: round trips, status transitions, refusals, and SIGKILL crash consistency."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alphac.errors import UserError
from alphac.search.journal import (
    HISTORY_COLUMNS,
    JOURNAL_NAME,
    SCHEMA_VERSION,
    CorruptJournalError,
    Journal,
    JournalStateError,
    JournalVersionError,
    NotARunError,
    RunDirUnwritableError,
    RunExistsError,
    RunInUseError,
    RunMismatchError,
    check,
)

SETTINGS = {"target": "fashion-mnist", "objective": "params", "budget": {"candidates": 8},
            "seed": 3, "mutator": "property"}
IDENTITY = {"source": "/models/net.py", "sha256": "a" * 64, "input_shape": [1, 1, 28, 28],
            "target": "fashion-mnist"}


@pytest.fixture
def journal(tmp_path):
    with Journal.create(tmp_path / "run", SETTINGS, IDENTITY) as opened:
        yield opened


def write_files(journal: Journal, ident: int, content: bytes = b"weights") -> None:
    ind = journal.get(ident)
    for rel, data in ((ind.code_path, b"def build_model(): ...\n"), (ind.weights_path, content)):
        path = journal.run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_to_done(journal: Journal, ident: int, accuracy: float = 0.5) -> None:
    write_files(journal, ident)
    journal.start(ident, "w0")
    journal.finish(ident, params=10, flops=20, latency_ms=None, val_accuracy=accuracy,
                   train_seconds=1.0)


# -- round trip and transitions -------------------------------------------------------------


def test_every_field_round_trips_through_a_reopen(tmp_path):
    run_dir = tmp_path / "run"
    mutation = {"kind": "widen", "block": "layer1.0", "instances": ["layer1.0"], "seed": 7}
    with Journal.create(run_dir, SETTINGS, IDENTITY) as journal:
        seed = journal.add(None, None, 0, "fp-seed")
        run_to_done(journal, seed, accuracy=0.9)
        child = journal.add(seed, mutation, 7, "fp-child", "custom/model.py", "custom/w.pt",
                            {"depth": 4, "mixing": ["full"]}, extra={"note": "x"})
        write_files(journal, child, b"trained")
        journal.start(child, "worker-3")
        journal.finish(child, params=123, flops=4567, latency_ms=1.25, val_accuracy=0.875,
                       test_accuracy=0.5, train_seconds=2.5, extra={"schedule": "proxy"})
    with Journal.open(run_dir, expect_identity=IDENTITY) as journal:
        ind = journal.get(child)
        assert journal.settings == SETTINGS and journal.seed_identity == IDENTITY
        assert journal.schema_version == SCHEMA_VERSION and journal.alphac_version
        assert journal.created_at <= ind.queued_at <= ind.started_at <= ind.finished_at
    assert (ind.id, ind.parent, ind.generation, ind.mutation, ind.seed, ind.fingerprint) == (
        2, 1, 1, mutation, 7, "fp-child")
    assert (ind.code_path, ind.weights_path) == ("custom/model.py", "custom/w.pt")
    assert ind.weights_sha256 == hashlib.sha256(b"trained").hexdigest()
    assert ind.code_sha256 == hashlib.sha256(b"def build_model(): ...\n").hexdigest()
    assert ind.properties == {"depth": 4, "mixing": ["full"]}
    assert (ind.params, ind.flops, ind.latency_ms, ind.val_accuracy, ind.test_accuracy,
            ind.train_seconds) == (123, 4567, 1.25, 0.875, 0.5, 2.5)
    assert (ind.status, ind.reason, ind.attempts, ind.worker) == ("done", None, 1, "worker-3")
    assert ind.extra == {"note": "x", "schedule": "proxy"}


def test_ids_follow_insertion_order_with_default_paths_and_generations(journal):
    ids = [journal.add(None, None, 0, "seed")]
    for n in range(4):
        ids.append(journal.add(ids[-1], {"kind": "k"}, n, f"fp{n}"))
    assert ids == [1, 2, 3, 4, 5]
    assert [ind.id for ind in journal.individuals()] == ids
    assert [ind.generation for ind in journal.individuals()] == [0, 1, 2, 3, 4]
    assert journal.get(5).code_path == "candidates/000005/model.py"
    assert journal.get(5).weights_path == "candidates/000005/weights.pt"
    assert journal.get(1).parent is None and journal.get(1).mutation is None


def test_status_transitions_and_counts(journal):
    a, b, c, d = (journal.add(None, None, n, f"fp{n}") for n in range(4))
    assert journal.counts() == {"queued": 4, "running": 0, "done": 0, "failed": 0}
    run_to_done(journal, a)
    journal.start(b, "w1")
    journal.fail(c, "synthesis timed out")
    assert journal.counts() == {"queued": 1, "running": 1, "done": 1, "failed": 1}
    assert [ind.id for ind in journal.individuals("queued")] == [d]
    assert journal.get(b).status == "running" and journal.get(b).attempts == 1
    assert journal.get(c).reason == "synthesis timed out" and journal.get(c).finished_at
    with pytest.raises(JournalStateError, match="it is done"):
        journal.start(a, "w0")
    with pytest.raises(JournalStateError, match="needs running"):
        journal.finish(d, params=1, flops=1, latency_ms=None, val_accuracy=0.1, train_seconds=1)
    with pytest.raises(JournalStateError):
        journal.fail(a, "too late")
    with pytest.raises(KeyError):
        journal.get(99)
    with pytest.raises(KeyError):
        journal.add(99, None, 0, "orphan")
    assert journal.counts()["queued"] == 1  # the refused add left nothing behind


def test_finish_refuses_missing_files_and_bad_metrics(journal):
    ident = journal.add(None, None, 0, "fp")
    journal.start(ident, "w0")
    with pytest.raises(FileNotFoundError, match="write the candidate's files"):
        journal.finish(ident, params=1, flops=1, latency_ms=None, val_accuracy=0.5,
                       train_seconds=1)
    write_files(journal, ident)
    for bad in ({"val_accuracy": 1.5}, {"val_accuracy": float("nan")}, {"params": -1}):
        metrics = {"params": 1, "flops": 1, "latency_ms": None, "val_accuracy": 0.5,
                   "train_seconds": 1.0} | bad
        with pytest.raises(ValueError):
            journal.finish(ident, **metrics)
    assert journal.get(ident).status == "running"
    with pytest.raises(ValueError, match="inside"):
        journal.add(None, None, 0, "fp", "../escape.py")
    with pytest.raises(TypeError, match="JSON"):
        journal.add(None, None, 0, "fp", properties={"x": object()})


def test_requeue_rule_counts_attempts(journal):
    ident = journal.add(None, None, 0, "fp")
    journal.start(ident, "w0")
    assert journal.requeue_running() == [ident]
    ind = journal.get(ident)
    assert (ind.status, ind.attempts, ind.started_at) == ("queued", 1, None)
    journal.start(ident, "w1")
    assert journal.requeue_running() == []
    ind = journal.get(ident)
    assert (ind.status, ind.reason, ind.attempts) == ("failed", "worker died twice", 2)
    other = journal.add(None, None, 1, "fp1")
    journal.start(other, "w0")
    assert journal.requeue(other, max_attempts=1) is False
    assert journal.get(other).reason == "worker died once"
    assert journal.requeue_running() == []


def test_history_csv_has_one_row_per_done_candidate(journal, tmp_path):
    seed = journal.add(None, None, 0, "seed")
    run_to_done(journal, seed)
    child = journal.add(seed, {"kind": "widen", "block": "b1"}, 1, "fp1")
    run_to_done(journal, child, accuracy=0.75)
    journal.fail(journal.add(seed, {"kind": "narrow"}, 2, "fp2"), "NaN loss")
    journal.add(seed, None, 3, "fp3")  # still queued
    path = journal.write_history_csv(tmp_path / "history.csv")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == HISTORY_COLUMNS
    assert [row["id"] for row in rows] == ["1", "2"]
    assert rows[1]["mutation_kind"] == "widen" and rows[1]["mutation_block"] == "b1"
    assert rows[1]["val_accuracy"] == "0.75" and rows[1]["parent"] == "1"
    assert len(journal.history_rows()) == 2


# -- refusals -------------------------------------------------------------------------------


def test_create_twice_is_refused(journal):
    with pytest.raises(RunExistsError, match="already holds a run") as info:
        Journal.create(journal.run_dir, SETTINGS, IDENTITY)
    assert "--resume" in str(info.value) and isinstance(info.value, UserError)
    assert info.value.exit_code == 2


def unwritable_dir(tmp_path: Path, how: str) -> Path:
    if how == "a_file":
        (tmp_path / "run").write_text("not a folder")
        return tmp_path / "run"
    if how == "under_a_file":
        (tmp_path / "file.txt").write_text("not a folder")
        return tmp_path / "file.txt" / "run"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked


@pytest.mark.parametrize("how", [
    "under_a_file", "a_file",
    pytest.param("chmod", marks=pytest.mark.skipif(
        os.geteuid() == 0, reason="root writes through chmod 0o500")),
])
def test_unwritable_run_dir_is_refused(tmp_path, how):
    run_dir = unwritable_dir(tmp_path, how)
    with pytest.raises(RunDirUnwritableError, match="cannot write the run directory"):
        Journal.create(run_dir, SETTINGS, IDENTITY)
    assert not (run_dir / JOURNAL_NAME).exists()
    assert [p.name for p in tmp_path.rglob(".journal-*")] == []  # no temporary left behind


def test_open_a_folder_without_journal_says_not_a_run(tmp_path):
    with pytest.raises(NotARunError, match="not a run"):
        Journal.open(tmp_path)
    with pytest.raises(NotARunError, match="not a run"):
        Journal.open(tmp_path / "missing")
    assert check(tmp_path) and "not a run" in check(tmp_path)[0]


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(16384))


def _empty_database(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x)")


def _foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 1")


def _dropped_table(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE run")


def _trigger(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER t AFTER INSERT ON individuals BEGIN SELECT 1; END")


def _overwritten_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 3 * page, "the journal should span several pages"
    data[page:] = random.Random(1).randbytes(len(data) - page)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage, _empty_database, _foreign_database,
                                    _dropped_table, _trigger, _overwritten_pages])
def test_open_a_damaged_journal_says_corrupt(tmp_path, damage):
    run_dir = tmp_path / "run"
    with Journal.create(run_dir, SETTINGS, IDENTITY) as journal:
        for n in range(60):  # several pages, so page damage hits tables
            journal.add(None, {"kind": "k", "pad": "x" * 200}, n, f"fp{n}")
    damage(run_dir / JOURNAL_NAME)
    with pytest.raises(CorruptJournalError, match="corrupt") as info:
        Journal.open(run_dir)
    assert info.value.exit_code == 9 and "another --out" in str(info.value)
    assert "corrupt" in check(run_dir)[0]


def test_open_a_newer_schema_is_refused(journal):
    journal.close()
    with sqlite3.connect(journal.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalVersionError, match="newer alphac"):
        Journal.open(journal.run_dir)


@pytest.mark.parametrize(("key", "value"), [("sha256", "b" * 64), ("target", "cifar10"),
                                            ("input_shape", [1, 3, 32, 32])])
def test_resume_of_another_model_or_target_names_the_difference(journal, key, value):
    journal.close()
    with pytest.raises(RunMismatchError, match="another model or target") as info:
        Journal.open(journal.run_dir, expect_identity=IDENTITY | {key: value})
    assert f"{key}: the run has {IDENTITY[key]!r}" in str(info.value)
    assert repr(value) in str(info.value)


def test_resume_accepts_a_moved_file_with_the_same_bytes_and_checks_settings(journal):
    journal.close()
    moved = IDENTITY | {"source": "/elsewhere/net.py", "input_shape": (1, 1, 28, 28)}
    Journal.open(journal.run_dir, expect_identity=moved).close()
    zoo = {"source": "zoo:resnet", "sha256": None, "target": "fashion-mnist"}
    with pytest.raises(RunMismatchError, match="source"):
        Journal.open(journal.run_dir, expect_identity=zoo)
    with pytest.raises(RunMismatchError, match="lack strategy"):
        Journal.open(journal.run_dir, expect_settings_keys=("target", "strategy"))
    Journal.open(journal.run_dir, expect_settings_keys=("target", "objective")).close()


def test_one_writer_many_readers(journal):
    ident = journal.add(None, None, 0, "fp")
    with pytest.raises(RunInUseError, match="another process"):
        Journal.open(journal.run_dir)
    with Journal.open(journal.run_dir, readonly=True) as reader:
        assert reader.get(ident).status == "queued"
        journal.start(ident, "w0")  # the writer writes while a reader is open
        assert reader.get(ident).status == "running"
        with pytest.raises(JournalStateError, match="read-only"):
            reader.fail(ident, "no")
    journal.close()
    Journal.open(journal.run_dir).close()  # the lock went with close()


def test_check_reports_missing_and_changed_files(journal):
    a, b = journal.add(None, None, 0, "a"), journal.add(None, None, 1, "b")
    run_to_done(journal, a)
    run_to_done(journal, b)
    assert journal.check() == [] and check(journal.run_dir) == []
    (journal.run_dir / journal.get(a).weights_path).write_bytes(b"tampered")
    (journal.run_dir / journal.get(b).code_path).unlink()
    problems = journal.check()
    assert len(problems) == 2
    assert "individual 1's weights file" in problems[0] and "changed" in problems[0]
    assert "individual 2's code file" in problems[1] and "missing" in problems[1]


# -- crash consistency ----------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from alphac.search.journal import Journal

    run_dir = Path(sys.argv[1])
    journal = Journal.open(run_dir)
    print("ready", flush=True)
    n = 0
    while True:
        queued = journal.individuals("queued")
        if queued:
            ident = queued[0].id
        else:
            ident = journal.add(1, {"kind": "widen", "block": f"b{n}"}, n, f"fp-{time.time()}")
        ind = journal.get(ident)
        code = run_dir / ind.code_path
        code.parent.mkdir(parents=True, exist_ok=True)
        code.write_text(f"# candidate {ident}\\n" * 50)
        journal.start(ident, "child")
        print("started", ident, flush=True)
        time.sleep(0.01)  # training
        (run_dir / ind.weights_path).write_bytes(bytes([ident % 256]) * 200_000)
        journal.finish(ident, params=ident, flops=2 * ident, latency_ms=None,
                       val_accuracy=0.5, train_seconds=0.002)
        print("finished", ident, flush=True)
        n += 1
""")


def kill_child_after(run_dir: Path, delay: float) -> list[str]:
    """Start the child, SIGKILL it ``delay`` seconds after it opened the journal; its output."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return out.splitlines()


def test_sigkill_at_random_moments_loses_no_finished_candidate(tmp_path):
    run_dir = tmp_path / "run"
    with Journal.create(run_dir, SETTINGS, IDENTITY) as journal:
        run_to_done(journal, journal.add(None, None, 0, "seed"))
    rng = random.Random(20240601)
    delays = [0.0, *(rng.uniform(0.005, 0.3) for _ in range(11))]
    done_before: dict[int, tuple] = {}
    requeued_total, failed_twice = 0, 0
    for delay in delays:
        lines = kill_child_after(run_dir, delay)
        finished = {int(line.split()[1]) for line in lines if line.startswith("finished")}
        with Journal.open(run_dir, expect_identity=IDENTITY) as journal:
            assert journal.check() == []
            individuals = journal.individuals()
            assert [ind.id for ind in individuals] == list(range(1, len(individuals) + 1))
            done = {ind.id: (ind.code_sha256, ind.weights_sha256, ind.finished_at)
                    for ind in individuals if ind.status == "done"}
            assert finished <= set(done)
            assert all(done[ident] == row for ident, row in done_before.items())
            running = [ind for ind in individuals if ind.status == "running"]
            assert len(running) <= 1
            requeued = journal.requeue_running()
            assert requeued == [ind.id for ind in running if ind.attempts < 2]
            for ind in running:
                after = journal.get(ind.id)
                expected = "queued" if ind.attempts < 2 else "failed"
                assert after.status == expected, (ind, after)
                failed_twice += expected == "failed"
            assert journal.counts()["running"] == 0
            requeued_total += len(requeued)
        done_before = done
    assert len(done_before) >= len(delays) // 2, "the children should have finished candidates"
    assert requeued_total >= 3, "kills should land while a candidate was running"
    with Journal.open(run_dir, readonly=True) as journal:
        assert len(journal.individuals("failed")) == failed_twice


# -- successive halving, sessions, schema 1 -------------------------------------------------


def test_promote_records_rungs_in_order_with_their_weights(journal):
    a = journal.add(None, None, 0, "fp0")
    with pytest.raises(JournalStateError, match="needs done"):
        journal.promote(a, 1, val_accuracy=0.6, train_seconds=1.0, weights_path="x.pt")
    run_to_done(journal, a, accuracy=0.5)
    rung1 = journal.run_dir / "candidates/000001/trained-r1.pt"
    rung1.write_bytes(b"rung one")
    with pytest.raises(JournalStateError, match="last rung is 0"):
        journal.promote(a, 2, val_accuracy=0.6, train_seconds=1.0, weights_path="x.pt")
    with pytest.raises(FileNotFoundError):
        journal.promote(a, 1, val_accuracy=0.6, train_seconds=1.0, weights_path="missing.pt")
    journal.promote(a, 1, val_accuracy=0.7, train_seconds=2.0,
                    weights_path="candidates/000001/trained-r1.pt")
    journal.promote(a, 2, val_accuracy=None, train_seconds=0.5, reason="diverged")
    ind = journal.get(a)
    assert ind.val_accuracy == 0.5  # the row keeps the proxy's accuracy
    assert [(r.rung, r.val_accuracy, r.reason) for r in ind.rungs] == [
        (1, 0.7, None), (2, None, "diverged")]
    assert ind.rungs[0].weights_sha256 == hashlib.sha256(b"rung one").hexdigest()
    assert "rungs" not in ind.extra  # in their own table (schema 4)
    row = journal.history_rows()[0]
    assert (row["rung"], row["rung_val_accuracy"], row["val_accuracy"]) == (1, 0.7, 0.5)
    assert journal.check() == []
    rung1.write_bytes(b"changed")
    assert any("rung-1 weights" in p and "changed" in p for p in journal.check())


def test_sessions_sum_their_time_up_to_the_last_heartbeat(journal):
    assert journal.elapsed_seconds() == 0.0
    first = journal.begin_session()
    time.sleep(0.05)
    journal.heartbeat(first)
    after_one = journal.elapsed_seconds()
    assert after_one >= 0.05
    second = journal.begin_session()
    time.sleep(0.05)
    assert journal.elapsed_seconds() == pytest.approx(after_one)  # no heartbeat yet
    journal.heartbeat(second)
    assert journal.elapsed_seconds() >= after_one + 0.05


def test_a_schema_1_journal_gains_sessions_when_a_writer_opens_it(tmp_path):
    run = tmp_path / "run"
    with Journal.create(run, SETTINGS, IDENTITY) as made:
        made.add(None, None, 0, "fp")
    conn = sqlite3.connect(run / JOURNAL_NAME)
    conn.execute("DROP TABLE sessions")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Journal.open(run, readonly=True) as reader:
        assert reader.schema_version == 1 and reader.elapsed_seconds() == 0.0
    with Journal.open(run) as writer:
        assert writer.schema_version == SCHEMA_VERSION
        writer.heartbeat(writer.begin_session())
        assert [i.fingerprint for i in writer.individuals()] == ["fp"]


# -- typed trials, values, schema 3 ---------------------------------------------------------


def test_trials_are_typed_with_states_rungs_and_values(journal):
    from alphac.search.journal import Rung, Trial, TrialState

    assert journal.next_id() == 1
    seed = journal.add(None, None, 0, "fp")
    assert journal.next_id() == 2
    write_files(journal, seed)
    journal.start(seed, "w0")
    journal.finish(seed, params=10, flops=20, latency_ms=None, val_accuracy=0.5,
                   train_seconds=1.0, values={"params": 10, "peak_memory": 3.5e6,
                                              "latency": None})
    (journal.run_dir / "r1.pt").write_bytes(b"r1")
    journal.promote(seed, 1, val_accuracy=0.6, train_seconds=2.0, weights_path="r1.pt")
    trial = journal.get(seed)
    assert isinstance(trial, Trial) and trial.state is TrialState.DONE and trial.status == "done"
    assert trial.values == {"params": 10.0, "flops": 20.0, "peak_memory": 3.5e6}
    assert trial.rungs == (Rung(1, 0.6, 2.0, "r1.pt", trial.rungs[0].weights_sha256),)
    assert journal.individuals()[0].values == trial.values
    with pytest.raises(ValueError, match="finite"):
        journal.finish(journal.add(None, None, 1, "fp2"), params=1, flops=1, latency_ms=None,
                       val_accuracy=0.5, train_seconds=1.0, values={"x": math.nan})


def test_a_schema_2_journal_gains_trial_values_when_a_writer_opens_it(tmp_path):
    run = tmp_path / "run"
    with Journal.create(run, SETTINGS, IDENTITY) as made:
        run_to_done(made, made.add(None, None, 0, "fp"))
    conn = sqlite3.connect(run / JOURNAL_NAME)
    conn.execute("DROP TABLE trial_values")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Journal.open(run, readonly=True) as reader:  # read as it is: values from the columns
        assert reader.schema_version == 2
        assert reader.get(1).values == {"params": 10.0, "flops": 20.0}
    with Journal.open(run) as writer:
        assert writer.schema_version == SCHEMA_VERSION
        ident = writer.add(1, {"kind": "k"}, 1, "fp1")
        write_files(writer, ident)
        writer.start(ident, "w0")
        writer.finish(ident, params=5, flops=6, latency_ms=None, val_accuracy=0.4,
                      train_seconds=1.0, values={"nodes": 7})
        assert writer.get(ident).values["nodes"] == 7.0
        assert writer.check() == []


def test_a_schema_3_journal_moves_its_rungs_into_their_table_when_a_writer_opens_it(tmp_path):
    """Schema 3 kept rungs and references in the trial's extra JSON: read-only they are read
    from there; a writer moves them into ``rungs`` (once) and the search goes on from them."""
    from alphac.search.journal import Rung

    run = tmp_path / "run"
    with Journal.create(run, SETTINGS, IDENTITY) as made:
        seed = made.add(None, None, 0, "fp")
        run_to_done(made, seed)
    old_rungs = [{"rung": 1, "val_accuracy": 0.7, "train_seconds": 2.0, "weights": "r1.pt",
                  "weights_sha256": "ab", "reason": None},
                 {"rung": 2, "val_accuracy": None, "train_seconds": 0.5, "reason": "diverged"}]
    old_refs = [{"generation": 1, "val_accuracy": 0.8, "train_seconds": 1.0, "weights": "g1.pt",
                 "weights_sha256": "cd", "reason": None}]
    conn = sqlite3.connect(run / JOURNAL_NAME)
    conn.execute("DROP TABLE rungs")
    conn.execute("UPDATE individuals SET extra = ? WHERE id = ?",
                 (json.dumps({"rungs": old_rungs, "references": old_refs, "note": 1}), seed))
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    expected_rungs = (Rung(1, 0.7, 2.0, "r1.pt", "ab"), Rung(2, None, 0.5, reason="diverged"))
    expected_refs = (Rung(1, 0.8, 1.0, "g1.pt", "cd"),)
    with Journal.open(run, readonly=True) as reader:
        assert reader.schema_version == 3
        trial = reader.get(seed)
        assert (trial.rungs, trial.references) == (expected_rungs, expected_refs)
    with Journal.open(run) as writer:
        assert writer.schema_version == SCHEMA_VERSION == 4
        trial = writer.get(seed)
        assert (trial.rungs, trial.references) == (expected_rungs, expected_refs)
        assert trial.extra == {"note": 1}  # moved, not copied
        (writer.run_dir / "g2.pt").write_bytes(b"g2")
        writer.reference(seed, 2, val_accuracy=0.81, train_seconds=1.0, weights_path="g2.pt")
        with pytest.raises(JournalStateError, match="last rung is 2"):
            writer.promote(seed, 2, val_accuracy=0.7, train_seconds=1.0, weights_path="g2.pt")
        assert [r.rung for r in writer.individuals()[0].references] == [1, 2]
    with Journal.open(run) as again:  # a second writer moves nothing twice
        assert [r.rung for r in again.get(seed).references] == [1, 2]
