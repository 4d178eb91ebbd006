#!/bin/bash
# Runs every suite against the sanitizer build in BUILD (default build-san):
# cmocka unit tests, pytest black-box tests, the ThreadSanitizer suite (the
# threaded unit tests and the multi-loop load scenarios against TSAN_BUILD,
# default build-tsan, made by `make TSAN=1 tsan-build`), and a short run of
# each fuzz harness. Prints each suite's result and ends with
# "N passed, N failed". Exit status is 0 only when nothing failed.
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build-san}
TSAN_BUILD=${TSAN_BUILD:-build-tsan}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TCPKIT_BIN=${TCPKIT_BIN:-$PWD/$BUILD/tcpkit}
LOGDIR=$BUILD/test-logs
mkdir -p "$LOGDIR"
PY=/usr/bin/python3
passed=0
failed=0

count() { # suite passed failed
    printf '%-8s %d passed, %d failed\n' "$1:" "$2" "$3"
    passed=$((passed + $2))
    failed=$((failed + $3))
}

# Runs the cmocka programs named test_* in DIR, logging to LOGS; sets sp and
# sf. A program that dies before its summary counts as one failure.
cmocka_suite() { # dir logs
    sp=0 sf=0
    for t in "$1"/test_*; do
        [ -x "$t" ] || continue
        name=$(basename "$t")
        "$t" >"$2/$name.log" 2>&1
        rc=$?
        p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$2/$name.log" | tail -1)
        f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$2/$name.log" | tail -1)
        p=${p:-0} f=${f:-0}
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
        if [ "$f" -ne 0 ]; then
            echo "--- $name failed:"; tail -30 "$2/$name.log"
        fi
        sp=$((sp + p)) sf=$((sf + f))
    done
}

# Runs pytest on its arguments, logging to LOG (and LOG's .xml); sets sp and
# sf from its summary line (errors count as failures).
pytest_suite() { # log args...
    log=$1
    shift
    "$PY" -m pytest "$@" -q -p no:cacheprovider -o junit_family=xunit2 \
        --junitxml="${log%.log}.xml" >"$log" 2>&1
    rc=$?
    summary=$(grep -E '^[=]* *[0-9]+ (passed|failed|error)' "$log" | tail -1)
    sp=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
    sf=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    se=$(echo "$summary" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
    sp=${sp:-0} sf=$(( ${sf:-0} + ${se:-0} ))
    # pytest exit 5 means it collected nothing: that is a failure here.
    if [ "$rc" -ne 0 ] && [ "$sf" -eq 0 ]; then sf=1; fi
    if [ "$sf" -ne 0 ]; then
        echo "--- failures in $log:"; grep -E '^(FAILED|ERROR)' "$log" | head -40
        tail -60 "$log"
    fi
}

# Unit tests: one cmocka program per file.
cmocka_suite "$BUILD/tests" "$LOGDIR"
count unit "$sp" "$sf"

# Black-box tests against the real binary, with Debian's pytest.
pytest_suite "$LOGDIR/e2e.log" tests/e2e
count e2e "$sp" "$sf"

# ThreadSanitizer: the threaded unit tests, then the scenarios with several
# loops and client threads against the TSan binary. halt_on_error: the first
# race ends the program with its report, which fails the test.
TSAN_LOGS=$TSAN_BUILD/test-logs
if [ -x "$TSAN_BUILD/tcpkit" ]; then
    mkdir -p "$TSAN_LOGS"
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
    cmocka_suite "$TSAN_BUILD/tests" "$TSAN_LOGS"
    tp=$sp tf=$sf
    TCPKIT_BIN=$PWD/$TSAN_BUILD/tcpkit pytest_suite "$TSAN_LOGS/e2e.log" \
        tests/e2e/test_threads_under_load.py
    count tsan "$((tp + sp))" "$((tf + sf))"
else
    echo "--- tsan: $TSAN_BUILD/tcpkit is missing (make TSAN=1 tsan-build)"
    count tsan 0 1
fi

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
