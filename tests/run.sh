#!/usr/bin/env bash
# `make test`: the suite as two pytest runs side by side. The stack and container tests
# (tests/stack, tests/integration/test_images.py) spend most of their time waiting on the
# services and containers they start, so they run beside the rest; their output goes to
# .pytest-stack.log and is printed after the rest. Arguments go to both runs; the exit status
# is pytest's when one run failed, 0 when both passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
pytest=.venv/bin/pytest
side=(tests/stack tests/integration/test_images.py)
log=.pytest-stack.log

echo "tests: ${side[*]} run beside the rest (follow them with: tail -f $log)"
"$pytest" "${side[@]}" "$@" >"$log" 2>&1 &
side_pid=$!
trap 'kill -INT "$side_pid" 2>/dev/null; wait "$side_pid"' INT TERM
"$pytest" --ignore=tests/stack --ignore=tests/integration/test_images.py "$@"
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
