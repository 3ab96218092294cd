#!/bin/bash
# Instructions per call of one loop.py case under valgrind's callgrind (deterministic, unlike timings on a
# shared machine): bash benchmarks/callgrind/count.sh CASE [N] [PYTHON]; PYTHON: a venv with torch and convlab.
# Run from a checkout: PYTHONPATH=.:backends/torch bash benchmarks/callgrind/count.sh cl
set -euo pipefail
case=$1 n=${2:-1000} py=${3:-.nox/tests-torch/bin/python}
here=$(dirname "$0") out=$(mktemp)
coproc VG { valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no --toggle-collect=builtin_exec \
  --callgrind-out-file="$out" "$py" "$here/loop.py" "$case" "$n" 2>/dev/null; }
read -r _ <&"${VG[0]}"
sleep 1
callgrind_control -i on >/dev/null 2>&1
echo go >&"${VG[1]}"
wait "$VG_PID" || true
echo "$case $(( $(awk '/^totals/ {print $2}' "$out") / n )) instructions per call"
rm -f "$out"
