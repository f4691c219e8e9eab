#!/usr/bin/env bash
# The long pipeline fuzz: tests/fuzz/test_pipeline_fuzz.py with EXAMPLES hypothesis examples
# (default 1000; the test suite runs 25), at the lowest CPU priority. bench/fuzz_report.py writes
# the counts (examples, children, SynthesisFailed, failures, wall time) to bench/results/fuzz.md;
# the script exits with pytest's status, so a failure (anything but SynthesisFailed escaping, a
# wrong shape, generated code that does not run) fails it.
#
#   bench/fuzz_pipeline.sh          # 1000 examples, about 15-20 min on 2 shared CPU cores
#   bench/fuzz_pipeline.sh 200
set -uo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-1000}"
PYTHON="${PYTHON:-.venv/bin/python}"
REPORT="$(mktemp)"
LOG="$(mktemp)"
trap 'rm -f "$REPORT" "$LOG"' EXIT

start=$(date +%s)
ALPHAC_FUZZ_EXAMPLES="$EXAMPLES" ALPHAC_FUZZ_REPORT="$REPORT" \
    nice -n 19 "$PYTHON" -m pytest tests/fuzz -q -p no:cacheprovider -p no:logging >"$LOG" 2>&1
status=$?
wall=$(( $(date +%s) - start ))
tail -n 5 "$LOG"

"$PYTHON" bench/fuzz_report.py "$REPORT" "$LOG" "$status" "$wall" "$EXAMPLES"
exit "$status"
