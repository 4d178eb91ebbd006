#!/usr/bin/env bash
# Side-by-side benchmarks, run by `make bench` after `make all`; see
# bench/README.md.
#   echo: tcpkit's echo-server against a bare epoll server in C (the floor)
#         and the goroutine-per-connection Go server the tutorials teach.
#   chat: fan-out of tcpkit's chat-server (JSON mode, history on) against
#         Redis pub/sub and the channel-hub Go chat server the tutorials teach.
#
#   BENCH_SECONDS       measured seconds per load run (default 5, fractions ok)
#   BENCH_ROUNDS        runs of each scenario per server; the median is shown (3)
#   BENCH_IDLE_CONNS    connections held open for the memory scenario (10000)
#   BENCH_SECTIONS      which parts to run ("echo chat")
#
# Everything listens on 127.0.0.1 only, every wait has a deadline, and every
# process started here is stopped by its PID on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
TCPKIT=$ROOT/build/tcpkit
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_ROUNDS must be a positive integer" >&2; exit 2; }
[[ $SECS =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "bench: BENCH_SECONDS must be a number" >&2; exit 2; }
IDLE_N=${BENCH_IDLE_CONNS:-10000}
SECTIONS=" ${BENCH_SECTIONS:-echo chat} "
for s in $SECTIONS; do
    [[ $s == echo || $s == chat ]] || { echo "bench: BENCH_SECTIONS takes echo and chat" >&2; exit 2; }
done
section() { [[ $SECTIONS == *" $1 "* ]]; }
THREADS=$(nproc)
READY_TIMEOUT=15 # seconds a server gets to print its "listening on" line
SERVERS="floor tcpkit go"

declare -A PID PORT DRAIN
HELPER_PID=""
FAILED=0

log() { printf '%s\n' "$*" >&2; }

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    local name
    if [ -n "$HELPER_PID" ]; then
        kill "$HELPER_PID" 2>/dev/null || true
    fi
    for name in "${!PID[@]}"; do
        stop_server "$name"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$TCPKIT" ] || { log "bench: $TCPKIT is missing; run 'make all' first"; exit 1; }
mkdir -p "$OUT"

# Chat fan-out: receivers per run (one room), senders, message bytes, and
# unacknowledged messages each sender keeps in flight.
CHAT_SIZES="100 1000"
CHAT_SENDERS=4
CHAT_PAYLOAD=64
CHAT_WINDOW=64

# The 1000-connection run and the idle scenario need a descriptor per
# connection on both sides (each process has its own limit).
want=$((IDLE_N + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || {
        IDLE_N=$((hard - 1024))
        want=$hard
        log "bench: descriptor limit is $hard; holding $IDLE_N idle connections"
    }
fi
ulimit -n "$want"

log "bench: building the comparison servers into bench/out/"
gcc -O2 -Wall -Wextra -o "$OUT/floor_echo" bench/floor_echo.c -pthread
gcc -O2 -Wall -Wextra -o "$OUT/idle_conns" bench/idle_conns.c
cc -std=c11 -O2 -Wall -Wextra -Werror -o "$OUT/fanout" bench/fanout.c
for prog in go_echo go_hub; do
    (
        cd "bench/$prog"
        # Caches live under bench/out; the standard library is all they
        # import, so nothing is downloaded.
        GOCACHE="$OUT/go-cache" GOPATH="$OUT/go-path" GOPROXY=off GOFLAGS=-mod=mod \
            go build -o "$OUT/$prog" .
    )
done

# Starts a server on 127.0.0.1:0 and waits for its "listening on" line;
# its output goes on to bench/out/NAME.log.
start_server() {
    local name=$1 fifo="$OUT/$1.fifo" line="" fd port="" t0=$SECONDS
    local -a cmd
    case $name in
    floor) cmd=("$OUT/floor_echo" 127.0.0.1:0 "$THREADS") ;;
    tcpkit) cmd=("$TCPKIT" echo-server --listen 127.0.0.1:0 --log-level warn) ;;
    go) cmd=(env GOMAXPROCS="$THREADS" "$OUT/go_echo" -listen 127.0.0.1:0) ;;
    chat)
        cmd=("$TCPKIT" chat-server --listen 127.0.0.1:0 --mode json --flood-rate 0
            --max-clients 0 --db "$CHAT_DB/bench.db" --log-level warn)
        ;;
    gohub) cmd=(env GOMAXPROCS="$THREADS" "$OUT/go_hub" -listen 127.0.0.1:0) ;;
    esac
    rm -f "$fifo"
    mkfifo "$fifo"
    "${cmd[@]}" >"$fifo" 2>&1 &
    PID[$name]=$!
    exec {fd}<"$fifo"
    while [ $((SECONDS - t0)) -lt "$READY_TIMEOUT" ]; do
        IFS= read -r -t "$READY_TIMEOUT" -u "$fd" line || break
        if [[ $line =~ listening\ on\ .*:([0-9]+) ]]; then
            port=${BASH_REMATCH[1]}
            break
        fi
        printf '%s\n' "$line" >>"$OUT/$name.log"
    done
    cat <&"$fd" >>"$OUT/$name.log" &
    DRAIN[$name]=$!
    exec {fd}<&-
    rm -f "$fifo"
    if [ -z "$port" ]; then
        log "bench: $name did not report a listening address (see bench/out/$name.log)"
        return 1
    fi
    PORT[$name]=$port
}

# redis-server cannot report the port it bound, so it gets one that was free
# a moment ago (and another if something took it meanwhile); ready once
# redis-cli gets its PONG.
start_redis() {
    local port t0 attempt
    for attempt in 1 2 3; do
        port=$("$OUT/fanout" --free-port)
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --logfile '' >>"$OUT/redis.log" 2>&1 &
        PID[redis]=$!
        t0=$SECONDS
        while [ $((SECONDS - t0)) -lt "$READY_TIMEOUT" ] && kill -0 "${PID[redis]}" 2>/dev/null; do
            if [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
                PORT[redis]=$port
                return 0
            fi
            sleep 0.1
        done
        stop_server redis
        log "bench: redis-server did not answer on port $port (attempt $attempt, see bench/out/redis.log)"
    done
    return 1
}

stop_server() {
    local name=$1 pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -n "${DRAIN[$name]:-}" ]; then
        kill "${DRAIN[$name]}" 2>/dev/null || true
        wait "${DRAIN[$name]}" 2>/dev/null || true
    fi
    unset "PID[$name]" "DRAIN[$name]"
}

rss_kb() {
    awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" \
        2>/dev/null || echo 0
}

RUNS="$OUT/runs.jsonl"
MEM="$OUT/memory.jsonl"
CHAT="$OUT/chat.jsonl"
: >"$RUNS"
: >"$MEM"
: >"$CHAT"

# One load run: scenario name, server, connections, pipeline depth, round.
bench_one() {
    local scenario=$1 name=$2 conns=$3 depth=$4 round=$5 json rc=0 limit
    limit=$(awk -v s="$SECS" 'BEGIN { printf "%d", s + 60 }')
    json=$(timeout "$limit" "$TCPKIT" bench --json -c "$conns" -p "$depth" -s 64 -d "$SECS" \
        -t "$THREADS" "127.0.0.1:${PORT[$name]}") || rc=$?
    if [ "$rc" -ne 0 ] || [ -z "$json" ]; then
        log "bench: $scenario against $name failed (exit $rc)"
        FAILED=1
        [ -n "$json" ] || json='{"requests":0,"errors":0,"rps":0,"p50_us":0,"p99_us":0,"p999_us":0,"max_us":0}'
    fi
    printf '{"scenario":"%s","server":"%s","round":%d,"exit":%d,%s\n' "$scenario" "$name" \
        "$round" "$rc" "${json#\{}" >>"$RUNS"
}

if section echo; then
    log "bench: ${SECS}s per run, $ROUNDS rounds, $THREADS threads in every server and in the client"
    for name in $SERVERS; do
        start_server "$name"
    done
    # Rounds interleave the servers, so a slow spell of the machine hits all of
    # them rather than one.
    for scenario in "100c-p1:100:1" "100c-p16:100:16" "1000c-p1:1000:1"; do
        IFS=: read -r sname conns depth <<<"$scenario"
        for round in $(seq "$ROUNDS"); do
            for name in $SERVERS; do
                log "bench: $sname round $round/$ROUNDS -> $name"
                bench_one "$sname" "$name" "$conns" "$depth" "$round"
            done
        done
    done
    for name in $SERVERS; do
        stop_server "$name"
    done
fi

# Memory: a fresh server, its RSS, N connections that each echoed one line
# and now sit idle, its RSS again.
idle_one() {
    local name=$1 fifo="$OUT/idle.fifo" before after line="" fd opened=0 answered=0
    start_server "$name" || { FAILED=1; return; }
    before=$(rss_kb "${PID[$name]}")
    rm -f "$fifo"
    mkfifo "$fifo"
    "$OUT/idle_conns" "127.0.0.1:${PORT[$name]}" "$IDLE_N" 300 >"$fifo" &
    HELPER_PID=$!
    exec {fd}<"$fifo"
    IFS= read -r -t 120 -u "$fd" line || true
    exec {fd}<&-
    rm -f "$fifo"
    if [[ $line =~ ^ready\ ([0-9]+)\ ([0-9]+) ]]; then
        opened=${BASH_REMATCH[1]}
        answered=${BASH_REMATCH[2]}
    fi
    after=$(rss_kb "${PID[$name]}")
    kill "$HELPER_PID" 2>/dev/null || true
    wait "$HELPER_PID" 2>/dev/null || true
    HELPER_PID=""
    stop_server "$name"
    if [ "$answered" -ne "$IDLE_N" ]; then
        log "bench: idle: $name answered $answered of $IDLE_N connections ($opened opened)"
        FAILED=1
    fi
    printf '{"scenario":"idle","server":"%s","connections":%d,"answered":%d,"rss_before_kb":%d,"rss_after_kb":%d,"bytes_per_conn":%d}\n' \
        "$name" "$opened" "$answered" "$before" "$after" \
        "$(((after - before) * 1024 / (opened > 0 ? opened : 1)))" >>"$MEM"
}
if section echo; then
    for name in $SERVERS; do
        log "bench: idle $IDLE_N -> $name"
        idle_one "$name"
    done
fi

# Chat fan-out: N receivers in one room and CHAT_SENDERS senders publishing
# CHAT_PAYLOAD-byte messages into it; bench/fanout counts what the receivers
# get per second. Every run starts a fresh server (tcpkit with a fresh
# history file), so what one run leaves behind (a thousand departures to
# announce, a grown history) does not weigh on the next.
CHAT_WARMUP=$(awk -v s="$SECS" 'BEGIN { w = s / 5; print (w < 1 ? w : 1) }')
CHAT_DB=""
chat_one() {
    local size=$1 label=$2 round=$3 name=$2 json="" rc=0 limit
    [ "$label" != tcpkit ] || name=chat
    if [ "$name" = chat ]; then
        CHAT_DB=$(mktemp -d "$OUT/chat-db.XXXXXX")
    fi
    if { [ "$name" = redis ] && start_redis; } || { [ "$name" != redis ] && start_server "$name"; }; then
        limit=$(awk -v s="$SECS" -v w="$CHAT_WARMUP" 'BEGIN { printf "%d", s + w + 150 }')
        json=$(timeout "$limit" "$OUT/fanout" --target "$label" --addr "127.0.0.1:${PORT[$name]}" \
            --receivers "$size" --senders "$CHAT_SENDERS" --payload "$CHAT_PAYLOAD" \
            --window "$CHAT_WINDOW" --seconds "$SECS" --warmup "$CHAT_WARMUP" \
            --setup-timeout 60) || rc=$?
    else
        rc=125
    fi
    stop_server "$name"
    if [ -n "$CHAT_DB" ]; then
        rm -rf "$CHAT_DB"
        CHAT_DB=""
    fi
    if [ "$rc" -ne 0 ] || [ -z "$json" ]; then
        log "bench: fanout-$size against $label failed (exit $rc)"
        FAILED=1
        [ -n "$json" ] || json='{"deliveries":0,"deliveries_per_sec":0,"published":0,"errors":0}'
    fi
    printf '{"scenario":"fanout-%d","server":"%s","round":%d,"exit":%d,%s\n' "$size" "$label" \
        "$round" "$rc" "${json#\{}" >>"$CHAT"
}
if section chat; then
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        log "bench: chat: redis-server and redis-cli are missing (scripts/deps.sh bench installs them)"
        FAILED=1
    elif ! "$TCPKIT" chat-server --help >/dev/null 2>&1; then
        log "bench: chat: $TCPKIT has no chat-server command"
        FAILED=1
    else
        log "bench: chat fan-out: ${SECS}s per run after ${CHAT_WARMUP}s warm-up, $ROUNDS rounds," \
            "$CHAT_SENDERS senders, $CHAT_PAYLOAD B messages, window $CHAT_WINDOW"
        # Interleaved like the echo rounds.
        for size in $CHAT_SIZES; do
            for round in $(seq "$ROUNDS"); do
                for label in tcpkit redis gohub; do
                    log "bench: fanout-$size round $round/$ROUNDS -> $label"
                    chat_one "$size" "$label" "$round"
                done
            done
        done
    fi
fi

{
    printf '{"seconds":%s,"rounds":%d,"threads":%d,"idle_connections":%d,\n"runs":[\n' \
        "$SECS" "$ROUNDS" "$THREADS" "$IDLE_N"
    sed '$!s/$/,/' "$RUNS"
    printf '],\n"memory":[\n'
    sed '$!s/$/,/' "$MEM"
    printf '],\n"chat":{"senders":%d,"payload":%d,"window":%d,"warmup":%s,"runs":[\n' \
        "$CHAT_SENDERS" "$CHAT_PAYLOAD" "$CHAT_WINDOW" "$CHAT_WARMUP"
    sed '$!s/$/,/' "$CHAT"
    printf ']}}\n'
} >"$OUT/results.json"

# The tables, from the JSON lines: awk pulls "key":value pairs apart.
# shellcheck disable=SC2016 # awk code, not shell
TABLE_AWK='
function str(k,   m) { return match($0, "\"" k "\":\"[^\"]*\"") ? substr($0, RSTART + length(k) + 4, RLENGTH - length(k) - 5) : "" }
function num(k) { return match($0, "\"" k "\":[0-9.]+") ? substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3) + 0 : 0 }
function median(arr, cnt,   a, b, v, tmp) {
    for (a = 1; a <= cnt; a++) { # insertion sort; a handful of rounds
        v = arr[a]
        for (b = a - 1; b >= 1 && tmp[b] > v; b--)
            tmp[b + 1] = tmp[b]
        tmp[b + 1] = v
    }
    for (a = 1; a <= cnt; a++)
        arr[a] = tmp[a]
    return cnt % 2 ? tmp[(cnt + 1) / 2] : (tmp[cnt / 2] + tmp[cnt / 2 + 1]) / 2
}
'
# One row per scenario and server: the round with the median req/s, how far
# the rounds spread around it, and the median of the per-round ratios to the
# floor (each round's servers ran back to back, so a ratio within a round is
# not skewed by the machine slowing down between rounds).
if [ -s "$RUNS" ]; then
    echo
    awk "$TABLE_AWK"'
{
    k = str("scenario") " " str("server")
    if (!(k in n))
        keys[++nk] = k
    n[k]++
    row[k, n[k]] = $0
    errs[k] += num("errors")
    rps_of[str("scenario"), str("server"), num("round")] = num("rps")
}
END {
    printf "%-10s %-7s %10s %7s %8s %8s %9s %6s %8s\n", "scenario", "server", "req/s", "spread",
           "p50 ms", "p99 ms", "p99.9 ms", "errors", "vs floor"
    for (j = 1; j <= nk; j++) {
        k = keys[j]
        split("", v)
        split("", ratio)
        nr = 0
        for (a = 1; a <= n[k]; a++) {
            $0 = row[k, a]
            v[a] = num("rps")
            f = rps_of[str("scenario"), "floor", num("round")]
            if (f > 0)
                ratio[++nr] = num("rps") / f
        }
        m = median(v, n[k])
        best = 1 # latencies come from the round nearest the median
        for (a = 2; a <= n[k]; a++) {
            $0 = row[k, a]
            d = num("rps") - m
            $0 = row[k, best]
            if (d * d < (num("rps") - m) * (num("rps") - m))
                best = a
        }
        $0 = row[k, best]
        spread = m > 0 ? (v[n[k]] - v[1]) / m * 100 : 0
        printf "%-10s %-7s %10.0f %6.0f%% %8.3f %8.3f %9.3f %6d %8s\n", str("scenario"),
               str("server"), m, spread, num("p50_us") / 1000, num("p99_us") / 1000,
               num("p999_us") / 1000, errs[k], (nr > 0 ? sprintf("%.2f", median(ratio, nr)) : "-")
    }
}' "$RUNS"
fi
if [ -s "$MEM" ]; then
    echo
    awk "$TABLE_AWK"'
BEGIN { printf "%-7s %11s %11s %14s %14s %11s\n", "server", "connections", "answered",
               "RSS before kB", "RSS after kB", "bytes/conn" }
{ printf "%-7s %11d %11d %14d %14d %11d\n", str("server"), num("connections"), num("answered"),
         num("rss_before_kb"), num("rss_after_kb"), num("bytes_per_conn") }' "$MEM"
fi
# Fan-out: one row per size and server, the median deliveries/s over the
# rounds and their spread, the median publish rate, and the medians of the
# per-round ratios to Redis and to the Go hub. errors counts connections
# dropped and error replies, plus failed runs.
if [ -s "$CHAT" ]; then
    echo
    awk "$TABLE_AWK"'
{
    k = str("scenario") " " str("server")
    if (!(k in n))
        keys[++nk] = k
    n[k]++
    row[k, n[k]] = $0
    errs[k] += num("errors") + (num("exit") != 0 && num("errors") == 0)
    dps_of[str("scenario"), str("server"), num("round")] = num("deliveries_per_sec")
}
function vs(other,   a, r, nr, o) {
    split("", r)
    nr = 0
    for (a = 1; a <= n[k]; a++) {
        $0 = row[k, a]
        o = dps_of[str("scenario"), other, num("round")]
        if (o > 0)
            r[++nr] = num("deliveries_per_sec") / o
    }
    return nr > 0 ? sprintf("%.2f", median(r, nr)) : "-"
}
END {
    printf "%-13s %-7s %12s %7s %12s %6s %8s %8s\n", "scenario", "server", "deliveries/s",
           "spread", "published/s", "errors", "vs redis", "vs gohub"
    for (j = 1; j <= nk; j++) {
        k = keys[j]
        split("", v)
        split("", p)
        for (a = 1; a <= n[k]; a++) {
            $0 = row[k, a]
            v[a] = num("deliveries_per_sec")
            p[a] = num("seconds") > 0 ? num("published") / num("seconds") : 0
        }
        m = median(v, n[k])
        spread = m > 0 ? (v[n[k]] - v[1]) / m * 100 : 0
        pm = median(p, n[k])
        $0 = row[k, 1]
        name = str("scenario")
        server = str("server")
        printf "%-13s %-7s %12.0f %6.0f%% %12.0f %6d %8s %8s\n", name, server, m, spread, pm,
               errs[k], vs("redis"), vs("gohub")
    }
}' "$CHAT"
fi
echo
echo "raw results: bench/out/results.json"
exit "$FAILED"
