#!/bin/bash
# Runs every suite against the sanitizer build in BUILD (default build-san):
# cmocka unit tests, pytest black-box tests, and a short run of each fuzz
# harness. Prints each suite's result and ends with "N passed, N failed".
# Exit status is 0 only when nothing failed.
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build-san}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TCPKIT_BIN=${TCPKIT_BIN:-$PWD/$BUILD/tcpkit}
LOGDIR=$BUILD/test-logs
mkdir -p "$LOGDIR"
passed=0
failed=0

count() { # suite passed failed
    printf '%-8s %d passed, %d failed\n' "$1:" "$2" "$3"
    passed=$((passed + $2))
    failed=$((failed + $3))
}

# Unit tests: one cmocka program per file; a program that dies before its
# summary counts as one failure.
up=0 uf=0
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    "$t" >"$LOGDIR/$name.log" 2>&1
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$LOGDIR/$name.log" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$LOGDIR/$name.log" | tail -1)
    p=${p:-0} f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    if [ "$f" -ne 0 ]; then
        echo "--- $name failed:"; tail -30 "$LOGDIR/$name.log"
    fi
    up=$((up + p)) uf=$((uf + f))
done
count unit "$up" "$uf"

# Black-box tests against the real binary, with Debian's pytest.
PY=/usr/bin/python3
"$PY" -m pytest tests/e2e -q -p no:cacheprovider -o junit_family=xunit2 \
    --junitxml="$LOGDIR/e2e.xml" >"$LOGDIR/e2e.log" 2>&1
rc=$?
summary=$(grep -E '^[=]* *[0-9]+ (passed|failed|error)' "$LOGDIR/e2e.log" | tail -1)
ep=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
ef=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
ee=$(echo "$summary" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
ep=${ep:-0} ef=$(( ${ef:-0} + ${ee:-0} ))
# pytest exit 5 means it collected nothing: that is a failure here.
if [ "$rc" -ne 0 ] && [ "$ef" -eq 0 ]; then ef=1; fi
if [ "$ef" -ne 0 ]; then
    echo "--- e2e failures:"; grep -E '^(FAILED|ERROR)' "$LOGDIR/e2e.log" | head -40
    tail -60 "$LOGDIR/e2e.log"
fi
count e2e "$ep" "$ef"

# Fuzz harnesses, briefly.
FUZZ_SECONDS=${FUZZ_SECONDS:-15} fuzz/run.sh >"$LOGDIR/fuzz.log" 2>&1
rc=$?
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOGDIR/fuzz.log" | tail -1)
fp=$(echo "$line" | cut -d' ' -f1)
ff=$(echo "$line" | cut -d' ' -f3)
fp=${fp:-0} ff=${ff:-0}
if [ "$rc" -ne 0 ] && [ "$ff" -eq 0 ]; then ff=1; fi
if [ "$ff" -ne 0 ]; then
    echo "--- fuzz failures:"; grep -E 'fuzz .*: |ERROR|SUMMARY' "$LOGDIR/fuzz.log" | head -20
fi
count fuzz "$fp" "$ff"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
