"""Write ``bench/results/fuzz.md`` from one run of the pipeline fuzz (``bench/fuzz_pipeline.sh``).

Run: ``python bench/fuzz_report.py COUNTS.json PYTEST.log STATUS SECONDS EXAMPLES``, where
COUNTS.json is what ``tests/fuzz/test_pipeline_fuzz.py`` wrote under ``ALPHAC_FUZZ_REPORT``,
PYTEST.log pytest's output, STATUS its exit status and SECONDS the wall time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "fuzz.md"
ABOUT = """\
An example is one subject (a random model from tests/fuzz/models.py, or a zoo model at
2x3x16x16 or 2x1x20x20) traced by one frontend, every analysis run on its blocks and on the
whole model, then one mutation per mutator (`property`, `random`) and, for about half of them,
one more `property` mutation of the first child (its blocks found again, as the search does).
Every child is checked: a new fingerprint, the parent's output shape, and its generated
`model.py`, run in a fresh namespace with the child's state dict, computing the child's output.
A failure is anything else escaping (an exception other than SynthesisFailed, a wrong shape,
generated code that does not run)."""


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()


def _keyed(counts: dict[str, int], prefix: str) -> str:
    return ", ".join(f"{k[len(prefix):]} {v}" for k, v in sorted(counts.items())
                     if k.startswith(prefix)) or "none"


def report(counts: dict, log: str, status: int, seconds: int, examples: str) -> str:
    """The markdown page for one run."""
    reasons = counts.pop("reasons", {})
    failed = re.search(r"(\d+) failed", log)
    dirty = " with uncommitted changes" if _git("status", "--porcelain", "passes", "alphac",
                                                 "tests/fuzz") else ""
    minutes, secs = divmod(int(seconds), 60)
    lines = [
        "# Pipeline fuzz", "",
        f"`bench/fuzz_pipeline.sh {examples}` (ALPHAC_FUZZ_EXAMPLES={examples}, `nice -n 19`, "
        f"one torch thread) at {_git('rev-parse', '--short', 'HEAD')}{dirty}.", "",
        "| examples | children | SynthesisFailed | failures | wall time |",
        "|---|---|---|---|---|",
        f"| {counts.get('examples', 0)} | {counts.get('children', 0)} | "
        f"{counts.get('synthesis_failed', 0)} | {int(failed.group(1)) if failed else 0} "
        f"(pytest exit {status}) | {minutes} min {secs:02d} s |", "",
        ABOUT, "",
        f"- subjects (kind:frontend): {_keyed(counts, 'subject:')}",
        f"- children by mutation kind: {_keyed(counts, 'kind:')}",
        f"- second-generation mutations: {counts.get('second_generation', 0)}",
        f"- SynthesisFailed by stage: {_keyed(counts, 'synthesis_failed:')}",
    ]
    if reasons:
        lines += ["", "SynthesisFailed reasons (first 100 characters), most frequent first:", ""]
        ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:15]
        lines += [f"- {n} x `{reason}`" for reason, n in ranked]
    if status != 0:
        tail = log.strip().splitlines()[-40:]
        lines += ["", "Failure (the end of pytest's output):", "", "```", *tail, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    counts_path, log_path, status, seconds, examples = argv
    raw = Path(counts_path).read_text()
    counts = json.loads(raw) if raw.strip() else {}
    log = Path(log_path).read_text(errors="replace")
    OUT.write_text(report(counts, log, int(status), int(seconds), examples))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
