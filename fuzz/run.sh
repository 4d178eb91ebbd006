#!/bin/sh
# Builds every fuzz/fuzz_<name>.c harness with clang and libFuzzer (plus ASan
# and UBSan) into build-fuzz/, then runs each for FUZZ_SECONDS (default 60)
# on a scratch copy of its seed corpus fuzz/corpus/<name>/, which is never
# written to. Prints "fuzz <name>: ok (N execs)" or "fuzz <name>: FAILED" per
# harness, then "N passed, N failed"; exits non-zero if any harness failed.
#
# The harnesses compile the codec sources (and the few more files each one
# needs, listed in extra_src below) directly with clang rather than linking
# the gcc-built archive, so the code under test is instrumented for coverage.
# Crashing inputs go to build-fuzz/artifacts/<name>-*.
# Usage: fuzz/run.sh [name...]   (default: every harness)
set -u

cd "$(dirname "$0")/.." || exit 2

seconds=${FUZZ_SECONDS:-60}
# Seconds one input may take before it counts as a hang (libFuzzer -timeout,
# wall-clock time): raise it for runs at low priority on a busy machine,
# where a process can wait for a CPU longer than an input takes.
timeout=${FUZZ_TIMEOUT:-10}
out=build-fuzz
cc=${FUZZ_CC:-clang}
cflags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c11"
cflags="$cflags -Iinclude -Isrc -D_GNU_SOURCE"

# The library sources the codecs and the echo command parser need: every
# codec file (lines, frames, JSON, UTF-8 text) and the command table.
lib_src=""
for f in src/codec/*.c src/services/echo_cmd.c; do
    [ -f "$f" ] && lib_src="$lib_src $f"
done
# What each harness needs beyond those, by name: the pure chat parsers
# (request parsing on jansson, names with ICU case folding); the balancer's
# settings parser and the value, address and socket-option parsers it calls;
# the value parsers alone; the scanner's target and port parsers; the file
# service's name checks; the bench reply counter; the chat client's
# rendering, a pure file of the command line layer compiled on its own; the
# address-range and policy parser (with the address type it matches); the
# host:port parser alone.
extra_src() {
    case "$1" in
    chat_render) set -- src/cli/chat_render.c ;;
    chat_*) set -- src/services/chat_parse.c src/services/chat_name.c ;;
    balance_*) set -- src/services/balance_config.c src/core/parse.c src/net/addr.c src/net/sock.c ;;
    values) set -- src/core/parse.c src/core/log.c src/net/sock.c ;;
    scan_targets) set -- src/tools/scan_targets.c src/core/parse.c ;;
    files_path) set -- src/services/files_path.c ;;
    cidr) set -- src/net/access_cidr.c src/net/addr.c ;;
    addr) set -- src/net/addr.c ;;
    bench_framing) set -- src/tools/bench_framing.c ;;
    *) set -- ;;
    esac
    for f in "$@"; do
        [ -f "$f" ] && printf ' %s' "$f"
    done
}

# Packages: jansson and the Unicode library the Makefile uses (its PKGS line),
# keeping those pkg-config knows and dropping libedit, which only the CLI needs.
pkgs=""
for p in jansson libutf8proc $(sed -n 's/^PKGS *:\{0,1\}= *//p' Makefile); do
    case " $pkgs " in *" $p "*) continue ;; esac
    [ "$p" = libedit ] && continue
    pkg-config --exists "$p" 2>/dev/null && pkgs="$pkgs $p"
done
# shellcheck disable=SC2086
pkg_flags=$(pkg-config --cflags --libs $pkgs)

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: $cc not found (scripts/deps.sh fuzz installs it)" >&2
    exit 2
fi

if [ $# -gt 0 ]; then
    names="$*"
else
    names=""
    for f in fuzz/fuzz_*.c; do
        n=${f#fuzz/fuzz_}
        names="$names ${n%.c}"
    done
fi

mkdir -p "$out/corpus" "$out/artifacts"
passed=0
failed=0

for name in $names; do
    bin="$out/fuzz_$name"
    log="$out/fuzz_$name.log"
    corpus="$out/corpus/$name"

    src="$lib_src $(extra_src "$name")"
    # shellcheck disable=SC2086
    if ! "$cc" $cflags -o "$bin" "fuzz/fuzz_$name.c" $src $pkg_flags -pthread >"$log" 2>&1; then
        echo "fuzz $name: FAILED"
        echo "  build failed, see $log" >&2
        failed=$((failed + 1))
        continue
    fi

    rm -rf "$corpus"
    mkdir -p "$corpus"
    if [ -d "fuzz/corpus/$name" ]; then
        cp -R "fuzz/corpus/$name/." "$corpus/"
    fi

    if "./$bin" -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$name-" "$corpus" >>"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "fuzz $name: ok (${execs:-0} execs)"
        passed=$((passed + 1))
    else
        echo "fuzz $name: FAILED"
        grep -E 'ERROR|SUMMARY|runtime error' "$log" | head -n 5 | sed 's/^/  /' >&2
        echo "  see $log; crashing input in $out/artifacts/$name-*" >&2
        failed=$((failed + 1))
    fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
