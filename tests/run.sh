#!/usr/bin/env bash
# `make test`: the suite as two pytest runs side by side. The tests that start a stack,
# containers or long-lived services and then mostly wait on them (tests/stack, the images, a
# live Prometheus, killed trainings) run beside the rest, so one's waiting is the other's CPU;
# their output goes to .pytest-stack.log and is printed after the rest. Arguments go to both
# runs; the exit status is the rest's when it failed, otherwise the other run's.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
pytest=.venv/bin/pytest
side=(
  tests/stack
  tests/integration/test_images.py
  tests/integration/test_live_prometheus.py
  tests/integration/test_lifecycle_repair.py
)
log=.pytest-stack.log

echo "tests: ${side[*]} run beside the rest (follow them with: tail -f $log)"
"$pytest" "${side[@]}" "$@" >"$log" 2>&1 &
side_pid=$!
trap 'kill -INT "$side_pid" 2>/dev/null; wait "$side_pid"' INT TERM
ignore=()
for path in "${side[@]}"; do ignore+=("--ignore=$path"); done
"$pytest" "${ignore[@]}" "$@"
rest=$?
wait "$side_pid"
beside=$?
trap - INT TERM
echo
echo "==== ${side[*]} ($log) ===="
cat "$log"
echo "tests: the rest exited $rest, ${side[*]} exited $beside"
if [ "$rest" -ne 0 ]; then exit "$rest"; fi
exit "$beside"
