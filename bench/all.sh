#!/usr/bin/env bash
# Every bench in turn (never two at once: they share the CPUs), each section written to
# docs/BENCHMARKS.md with --write. --quick: small sizes, to check the harness (~6 min);
# the figures to quote come from a full run (~30 min, 3 rounds where it counts) on a
# quiet machine.
#   bench/all.sh [--quick] [--write]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
quick=0 write=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --write) write=(--write docs/BENCHMARKS.md) ;;
    *) echo "usage: bench/all.sh [--quick] [--write]" >&2; exit 2 ;;
  esac
done
if (( quick )); then
  register=(--duration 3 --preload 10000) memory=(--jobs 100000 --tail 10000 --trace-jobs 10000)
  pipeline=(--quick) publish=(--quick) batch=(--duration 3) stall=(--quick) paced=(--duration 3)
  flood=(--idle 200 --slow 100 --hold 3)
else
  register=(--preload 100000 --purge --rounds 3) memory=() pipeline=(--rounds 3) publish=()
  batch=(--rounds 3) stall=() paced=(--rounds 3) flood=()
fi
run() { echo "== $*" >&2; "$PY" "$@"; }
run bench/headers.py
run bench/fsync.py --dir "${TMPDIR:-/tmp}"
# the paced load alone first, while the broker holds nothing from the closed-loop runs
run bench/register.py --tests rate --preload 0 --purge --section register-paced "${paced[@]}" "${write[@]}"
run bench/register.py "${register[@]}" "${write[@]}"
run bench/pipeline.py "${pipeline[@]}" "${write[@]}"
run bench/pipeline.py --rate 200 --section pipeline-rate "${pipeline[@]}" "${write[@]}"
run bench/publish.py "${publish[@]}" "${write[@]}"
run bench/batch.py "${batch[@]}" "${write[@]}"
run bench/memory.py "${memory[@]}" "${write[@]}"
run bench/snapshot_stall.py "${stall[@]}" "${write[@]}"
run bench/conn_flood.py "${flood[@]}" "${write[@]}"
run bench/membership.py "${write[@]}"
run bench/lossy.py "${write[@]}"
run bench/scheduled.py "${write[@]}"
if "$PY" -c "import matplotlib" 2>/dev/null; then
  run bench/chart.py "${write[@]}"
else
  echo "bench/chart.py skipped: matplotlib is not installed (pip install -e '.[bench]')" >&2
fi
