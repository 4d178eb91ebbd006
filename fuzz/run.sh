#!/bin/sh
# Builds every fuzz/fuzz_<name>.c harness with clang and libFuzzer (plus ASan
# and UBSan) into build-fuzz/, then runs each for FUZZ_SECONDS (default 60)
# on a scratch copy of its seed corpus fuzz/corpus/<name>/, which is never
# written to. Prints "fuzz <name>: ok (N execs)" or "fuzz <name>: FAILED" per
# harness, then "N passed, N failed"; exits non-zero if any harness failed.
#
# The harnesses compile the codec sources (and, for fuzz_chat_*, the chat
# parsers) directly with clang rather than linking the gcc-built archive, so
# the code under test is instrumented for coverage. Usage: fuzz/run.sh [name...]   (default: every harness)
set -u

cd "$(dirname "$0")/.." || exit 2

seconds=${FUZZ_SECONDS:-60}
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
# The chat harnesses (fuzz_chat_*) also need the pure chat parsers: request
# parsing (text and JSON, on jansson) and names (ICU case folding).
chat_src=""
for f in src/services/chat_parse.c src/services/chat_name.c; do
    [ -f "$f" ] && chat_src="$chat_src $f"
done
# fuzz_balance_config also needs the balancer's settings parser and the value,
# address and socket-option parsers it calls.
balance_src=""
for f in src/services/balance_config.c src/core/parse.c src/net/addr.c src/net/sock.c; do
    [ -f "$f" ] && balance_src="$balance_src $f"
done

# fuzz_cidr needs the range and policy parser (and the address type it
# matches); fuzz_addr the host:port parser alone.
cidr_src="src/net/access_cidr.c src/net/addr.c"
addr_src="src/net/addr.c"

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

    src="$lib_src"
    case "$name" in
    chat_*) src="$src $chat_src" ;;
    balance_*) src="$src $balance_src" ;;
    cidr) src="$src $cidr_src" ;;
    addr) src="$src $addr_src" ;;
    esac
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

    if "./$bin" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
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
