"""Crash consistency of `alphac optimize`: SIGKILL a search at random moments, check, resume.

Each trial starts a small real search (zoo:small_cnn on Fashion-MNIST, local worker processes),
kills its whole process group with SIGKILL after a random delay, checks the journal (``PRAGMA
integrity_check`` and every finished candidate present with its files, :func:`check`), checks
that no candidate finished before the kill was lost or changed, and then either kills the resumed
run again or lets it complete. At the end of each run: the requested number of children, no
duplicate candidates, nothing running or queued. Writes ``bench/results/crash_consistency.md``.

    python bench/crash_consistency.py                 # 5 runs x 2 kills = 10 kills
    python bench/crash_consistency.py --runs 1 --kills 1 --out /tmp/cc    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from alphac.search.journal import Journal, check

HERE = Path(__file__).resolve().parent
SEARCH = ["zoo:small_cnn", "--target", "fashion-mnist", "--steps", "5", "--final-steps", "8",
          "--subset", "800", "--device", "cpu", "--workers", "1", "--json"]


def _state(out: Path) -> dict:
    with Journal.open(out, readonly=True) as journal:
        inds = journal.individuals()
        counts = journal.counts()
    return {"done": {i.id: i.weights_sha256 for i in inds if i.status == "done"},
            "counts": counts, "rows": len(inds),
            "children": [i for i in inds if i.parent is not None
                         and not (i.reason or "").startswith("synthesis:")]}


def _kill_after(cmd: list[str], delay: float) -> tuple[bool, float]:
    """Run ``cmd``; SIGKILL its process group after ``delay`` s. (killed?, seconds it ran)."""
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False, time.monotonic() - began
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True, time.monotonic() - began


def trial(out: Path, candidates: int, kills: int, rng: random.Random, max_delay: float
          ) -> dict:
    cmd = [sys.executable, "-m", "alphac", "optimize", *SEARCH, "--candidates", str(candidates),
           "--out", str(out)]
    events, finished, problems = [], {}, []
    for k in range(kills):
        delay = rng.uniform(2.0, max_delay)
        killed, ran = _kill_after(cmd + (["--resume"] if k or (out / "journal.sqlite").exists()
                                         else []), delay)
        if not (out / "journal.sqlite").exists():
            events.append({"delay_s": round(delay, 1), "killed": killed, "state": "no journal"})
            continue
        found = check(out)
        state = _state(out)
        lost = [i for i, sha in finished.items() if state["done"].get(i) != sha]
        problems += found + [f"finished candidate {i} lost or changed" for i in lost]
        finished = state["done"]
        events.append({"delay_s": round(delay, 1), "killed": killed, "ran_s": round(ran, 1),
                       "done_at_kill": len(finished), "running_at_kill":
                       state["counts"]["running"], "check": found or "ok"})
        if not killed:
            break
    resume = ["--resume"] if (out / "journal.sqlite").exists() else []
    done = subprocess.run(cmd + resume, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        problems.append(f"the final resume failed: {done.stderr[-500:]}")
    state = _state(out)
    children = state["children"]
    problems += check(out)
    problems += [f"finished candidate {i} lost or changed" for i, sha in finished.items()
                 if state["done"].get(i) != sha]
    if len(children) != candidates:
        problems.append(f"{len(children)} children, {candidates} requested")
    if len({c.fingerprint for c in children}) != len(children):
        problems.append("duplicate candidates")
    if state["counts"]["running"] or state["counts"]["queued"]:
        problems.append(f"left running/queued: {state['counts']}")
    return {"kills": events, "children": len(children), "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kills", type=int, default=2, help="kills per run")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--max-delay", type=float, default=40.0, help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(".bench/crash"))
    parser.add_argument("--results", type=Path, default=HERE / "results" / "crash_consistency.md")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    began = time.monotonic()
    trials = []
    for run in range(args.runs):
        out = args.out / f"run-{run}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        result = trial(out, args.candidates, args.kills, rng, args.max_delay)
        trials.append(result)
        print(json.dumps({"run": run, **result}), flush=True)
    kills = sum(e["killed"] for t in trials for e in t["kills"])
    failures = sum(bool(t["problems"]) for t in trials)
    lines = ["# Crash consistency: SIGKILL at random moments, then resume", "",
             f"Measured by `python bench/crash_consistency.py --runs {args.runs} --kills "
             f"{args.kills}` (seed {args.seed}): zoo:small_cnn, {args.candidates} children per "
             f"run, one local worker process, kill delays uniform in [2, {args.max_delay:g}] s.",
             "", f"- runs: {args.runs}, SIGKILLs that hit a live search: {kills}",
             f"- runs with a problem: {failures}", f"- wall time: "
             f"{time.monotonic() - began:.0f} s", "",
             "| run | kill delays (s) | done at each kill | running at each kill | checks | "
             "children | problems |", "|---|---|---|---|---|---|---|"]
    for i, t in enumerate(trials):
        kill_events = [e for e in t["kills"] if e.get("killed")]
        lines.append(
            f"| {i} | {', '.join(str(e['delay_s']) for e in kill_events) or '-'} | "
            f"{', '.join(str(e.get('done_at_kill', '-')) for e in kill_events) or '-'} | "
            f"{', '.join(str(e.get('running_at_kill', '-')) for e in kill_events) or '-'} | "
            f"{', '.join(str(e.get('check', '-')) for e in kill_events) or '-'} | "
            f"{t['children']} | {'; '.join(t['problems']) or 'none'} |")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
