#!/usr/bin/env bash
# Side-by-side benchmarks, run by `make bench` after `make all`; see
# bench/README.md.
#   echo: tcpkit's echo-server against a bare epoll server in C (the floor)
#         and the goroutine-per-connection Go server the tutorials teach.
#   chat: fan-out of tcpkit's chat-server (JSON mode, history on) against
#         Redis pub/sub and the channel-hub Go chat server the tutorials teach.
#   files: downloads of a 1 GiB file and of four 256 MiB files from tcpkit's
#         file-server (protocols 1 and 2) against nginx, with iperf3 as the
#         ceiling of one TCP stream over loopback; the 1 GiB file also over
#         TLS from both (a test certificate made by scripts/certs.sh).
#   balance: tcpkit's balance against HAProxy and nginx's stream module in
#         front of the same echo and iperf3 backends (bench/balance.sh).
#   scan: full-range connect scans of 127.0.0.1 in a fresh network namespace
#         per run, tcpkit scan against nmap -sT -T5 (bench/scan.sh).
#
#   BENCH_SECONDS       measured seconds per load run (default 5, fractions ok)
#   BENCH_ROUNDS        runs of each scenario per server; the median is shown (3)
#   BENCH_IDLE_CONNS    connections held open for the memory scenario (10000)
#   BENCH_SECTIONS      which parts to run ("echo chat files balance scan")
#   BENCH_FILES_THREADS threads of tcpkit's file-server and nginx workers (1)
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
SECTIONS=" ${BENCH_SECTIONS:-echo chat files balance scan} "
for s in $SECTIONS; do
    [[ $s == echo || $s == chat || $s == files || $s == balance || $s == scan ]] ||
        { echo "bench: BENCH_SECTIONS takes echo, chat, files, balance and scan" >&2; exit 2; }
done
FILES_THREADS=${BENCH_FILES_THREADS:-1}
[[ $FILES_THREADS =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench: BENCH_FILES_THREADS must be a positive integer" >&2; exit 2; }
section() { [[ $SECTIONS == *" $1 "* ]]; }
THREADS=$(nproc)
READY_TIMEOUT=15 # seconds a server gets to print its "listening on" line
SERVERS="floor tcpkit go"

declare -A PID PORT DRAIN
HELPER_PID=""
FILES_TMP="" # tmpfs directory the file downloads go to, removed on exit
FAILED=0

log() { printf '%s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source bench/lib.sh

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    local name
    if [ -n "$HELPER_PID" ]; then
        kill "$HELPER_PID" 2>/dev/null || true
    fi
    for name in "${!PID[@]}"; do
        stop_server "$name"
    done
    if [ -n "$FILES_TMP" ]; then
        rm -rf "$FILES_TMP"
    fi
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

# Starts a server on 127.0.0.1:0 (iperf3: on port $2) and waits for its
# "listening on" line; its output goes on to bench/out/NAME.log.
start_server() {
    local name=$1 fifo="$OUT/$1.fifo"
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
    files)
        cmd=("$TCPKIT" file-server --root "$FILES_DIR" --listen 127.0.0.1:0
            --threads "$FILES_THREADS" --log-level warn)
        ;;
    # The same with sendfile() forced on: over loopback its default (auto)
    # reads and writes instead, which measured faster here.
    files-sf)
        cmd=("$TCPKIT" file-server --root "$FILES_DIR" --listen 127.0.0.1:0
            --threads "$FILES_THREADS" --sendfile on --log-level warn)
        ;;
    # The same over TLS, with the test certificate (--sendfile auto: the file
    # goes through kernel TLS with sendfile() when the kernel has it, else
    # it is read and encrypted by OpenSSL in the server).
    files-tls)
        cmd=("$TCPKIT" file-server --root "$FILES_DIR" --listen 127.0.0.1:0
            --threads "$FILES_THREADS" --tls-cert "$FILES_CERTS/server.pem"
            --tls-key "$FILES_CERTS/server.key" --log-level warn)
        ;;
    # One test, then it exits; --forceflush, or its "Server listening on
    # PORT" line sits in a buffer.
    iperf3) cmd=(iperf3 -s -1 -B 127.0.0.1 -p "$2" --forceflush) ;;
    esac
    rm -f "$fifo"
    mkfifo "$fifo"
    "${cmd[@]}" >"$fifo" 2>&1 &
    wait_listening "$name" "$fifo" "$OUT/$name.log"
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

stop_server() { stop_pid "$1"; }

rss_kb() {
    awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" \
        2>/dev/null || echo 0
}

RUNS="$OUT/runs.jsonl"
MEM="$OUT/memory.jsonl"
CHAT="$OUT/chat.jsonl"
FILES="$OUT/files.jsonl"
BALANCE="$OUT/balance.jsonl" # written by bench/balance.sh
BALANCE_TABLE="$OUT/balance.txt" # the tables it prints
SCAN="$OUT/scan.jsonl" # written by bench/scan.sh
SCAN_TABLE="$OUT/scan.txt" # the table it prints
: >"$RUNS"
rm -f "$OUT"/*.svg # plots of this run only
: >"$MEM"
: >"$CHAT"
: >"$FILES"
: >"$BALANCE"
: >"$BALANCE_TABLE"
: >"$SCAN"
: >"$SCAN_TABLE"

# One load run: scenario name, server, connections, pipeline depth, round.
bench_one() {
    local scenario=$1 name=$2 conns=$3 depth=$4 round=$5 json rc=0 limit
    limit=$(awk -v s="$SECS" 'BEGIN { printf "%d", s + 60 }')
    # One plot per scenario, from tcpkit's first round: latency by percentile
    # and replies per second (bench/report.py puts it in docs/BENCHMARKS.md).
    local -a plot=()
    if [ "$name" = tcpkit ] && [ "$round" -eq 1 ]; then
        plot=(--plot "$OUT/echo-tcpkit-$scenario.svg")
    fi
    json=$(timeout "$limit" "$TCPKIT" bench --json -c "$conns" -p "$depth" -s 64 -d "$SECS" \
        -t "$THREADS" "${plot[@]}" "127.0.0.1:${PORT[$name]}") || rc=$?
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

# File transfer over loopback: how close tcpkit's file-server gets to one
# TCP stream's ceiling (iperf3, memory to memory) and to nginx serving the
# same file with sendfile. The files are random bytes under bench/out/files/,
# written once and read through the page cache. Downloads of one file go to
# /dev/null, of several files into a tmpfs directory, the same for every
# client, so no disk is measured. Clients are timed from start to exit on the
# monotonic clock: rate = bytes * 8 / seconds.
FILES_DIR=$OUT/files
FILES_BIG=big.bin
FILES_BIG_BYTES=$((1 << 30))
FILES_PARTS="part1.bin part2.bin part3.bin part4.bin"
FILES_PART_BYTES=$((1 << 28))
FILES_LIMIT=120 # seconds one download may take
FILES_TCPKIT=0  # 1 once build/tcpkit has file-server and get
# The TLS downloads: a fresh test CA and server certificate (SAN localhost
# and 127.0.0.1) from scripts/certs.sh, made at the start of the section.
FILES_CERTS=$OUT/certs
FILES_TLS=0      # 1 once the certificates are there
FILES_KTLS=""    # whether the kernel has kernel TLS: yes, no or unknown
NGINX_KTLS=off   # on when nginx took "ssl_conf_command Options KTLS"
declare -A TLS_SEEN # contender -> "version cipher" the server negotiated
NGINX=""
GET=() # set by tcpkit_get

# Writes N random bytes to bench/out/files/NAME unless it already has that size.
files_make() {
    local path=$FILES_DIR/$1 bytes=$2
    [ "$(stat -c %s "$path" 2>/dev/null || echo 0)" != "$bytes" ] || return 0
    log "bench: writing $bytes random bytes to bench/out/files/$1"
    head -c "$bytes" /dev/urandom >"$path.tmp"
    mv "$path.tmp" "$path"
}

# timed FILE COMMAND...: runs COMMAND with its stdout in FILE and a deadline
# of FILES_LIMIT seconds, prints the seconds it took (monotonic clock) and
# exits with its status (124 past the deadline, 128+N on signal N).
TIMED_PY='
import subprocess, sys, time
limit, out, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
with open(out, "wb") as f:
    t0 = time.monotonic()
    try:
        rc = subprocess.run(cmd, stdout=f, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    print("%.6f" % (time.monotonic() - t0))
sys.exit(rc if rc >= 0 else 128 - rc)
'
timed() {
    python3 -c "$TIMED_PY" "$FILES_LIMIT" "$@"
}

# Total size of the named files in DIR (a missing one counts 0).
files_got() {
    local dir=$1 total=0 size f
    shift
    for f in "$@"; do
        size=$(stat -c %s "$dir/$f" 2>/dev/null || echo 0)
        total=$((total + size))
    done
    echo "$total"
}

# nginx cannot report the port it bound either: like redis it gets one that
# was free a moment ago, and is ready once it serves the big file. With the
# test certificate it listens on a second port with TLS as well, ready once
# that serves the file too (curl checks the certificate's IP address).
nginx_conf() {
    local port=$1 tls_port=$2 ktls=$3 user=""
    # As root the workers would switch to nobody, who may not reach the files.
    [ "$(id -u)" != 0 ] || user="user $(id -un) $(id -gn);"
    cat <<EOF
$user
worker_processes $FILES_THREADS;
daemon off;
pid "$OUT/nginx/nginx.pid";
error_log stderr warn;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path "$OUT/nginx/body";
    proxy_temp_path "$OUT/nginx/proxy";
    fastcgi_temp_path "$OUT/nginx/fastcgi";
    uwsgi_temp_path "$OUT/nginx/uwsgi";
    scgi_temp_path "$OUT/nginx/scgi";
    server {
        listen 127.0.0.1:$port;
        root "$FILES_DIR";
    }
EOF
    if [ -n "$tls_port" ]; then
        # OpenSSL's default ciphers; kernel TLS (and so sendfile over TLS)
        # only if asked for, and only where the kernel has it.
        cat <<EOF
    server {
        listen 127.0.0.1:$tls_port ssl;
        root "$FILES_DIR";
        ssl_certificate "$FILES_CERTS/server.pem";
        ssl_certificate_key "$FILES_CERTS/server.key";
        ssl_protocols TLSv1.2 TLSv1.3;
EOF
        [ "$ktls" != on ] || echo '        ssl_conf_command Options KTLS;'
        echo '    }'
    fi
    echo '}'
}

# Whether a URL serves the big file; https URLs are checked against the test CA.
nginx_serves() {
    curl -sfI --max-time 2 --cacert "$FILES_CERTS/ca.pem" -o /dev/null "$1"
}

start_nginx() {
    local port tls_port="" attempt t0 conf=$OUT/nginx/nginx.conf
    mkdir -p "$OUT/nginx"
    if [ "$FILES_TLS" = 1 ]; then
        # Kernel TLS for nginx if this build takes the directive (nginx has
        # ssl_conf_command since 1.19.4 and uses kTLS since 1.21.4).
        nginx_conf 1 2 on >"$conf"
        if "$NGINX" -t -q -p "$OUT/nginx/" -c "$conf" -e stderr >>"$OUT/nginx.log" 2>&1; then
            NGINX_KTLS=on
        else
            NGINX_KTLS=off
            log "bench: this nginx does not take 'ssl_conf_command Options KTLS'; left out"
        fi
    fi
    for attempt in 1 2 3; do
        port=$("$OUT/fanout" --free-port)
        if [ "$FILES_TLS" = 1 ]; then
            tls_port=$("$OUT/fanout" --free-port)
            [ "$tls_port" != "$port" ] || continue
        fi
        nginx_conf "$port" "$tls_port" "$NGINX_KTLS" >"$conf"
        "$NGINX" -p "$OUT/nginx/" -c "$conf" -e stderr >>"$OUT/nginx.log" 2>&1 &
        PID[nginx]=$!
        t0=$SECONDS
        while [ $((SECONDS - t0)) -lt "$READY_TIMEOUT" ] && kill -0 "${PID[nginx]}" 2>/dev/null; do
            if nginx_serves "http://127.0.0.1:$port/$FILES_BIG" &&
                { [ -z "$tls_port" ] || nginx_serves "https://127.0.0.1:$tls_port/$FILES_BIG"; }; then
                PORT[nginx]=$port
                [ -z "$tls_port" ] || PORT[nginx-tls]=$tls_port
                return 0
            fi
            sleep 0.1
        done
        stop_server nginx
        log "bench: nginx did not serve on port $port${tls_port:+ and $tls_port} (attempt $attempt, see bench/out/nginx.log)"
    done
    return 1
}

# iperf3's server takes one test and exits, so every run starts one, on a
# port that was free a moment ago (another if something took it meanwhile).
start_iperf3() {
    local attempt
    for attempt in 1 2 3; do
        start_server iperf3 "$("$OUT/fanout" --free-port)" && return 0
        stop_server iperf3
        log "bench: iperf3 could not listen (attempt $attempt, see bench/out/iperf3.log)"
    done
    return 1
}

# Writes and deletes 1.25 GiB in tmpfs just before a download into it. A VM
# may hand memory the guest freed back to the host a few seconds later, and
# the next writes into it then fault it back in at a fifth of the speed
# (measured here: 0.6-0.8 against 3.5-3.8 GB/s): without this, whether a
# download paid for that depended on how long ago the previous one ended.
tmpfs_prime() {
    head -c $((FILES_BIG_BYTES + FILES_BIG_BYTES / 4)) /dev/zero >"$FILES_TMP/prime"
    rm -f "$FILES_TMP/prime"
}

# tcpkit get's command line for a contender and a scenario; one file goes
# to stdout, several into DIR. Over TLS it verifies the server's certificate
# against the test CA (its IP address entry, as curl does with nginx).
tcpkit_get() {
    local label=$1 scenario=$2 dir=$3
    local port=${PORT[files]}
    GET=("$TCPKIT" get)
    [[ $label == tcpkit-v2* ]] || GET+=(--protocol 1)
    [[ $label != *-sf ]] || port=${PORT[files-sf]}
    if [[ $label == *-tls ]]; then
        port=${PORT[files-tls]}
        GET+=(--tls-ca "$FILES_CERTS/ca.pem")
    fi
    if [ "$scenario" = 1G ]; then
        GET+=("127.0.0.1:$port" "$FILES_BIG" -o - --quiet)
    else
        # shellcheck disable=SC2206 # the names are split on purpose
        GET+=("127.0.0.1:$port" $FILES_PARTS -o "$dir" --quiet)
    fi
}

# Untimed, before the rounds: every tcpkit download that is timed later,
# once, into tmpfs and compared byte for byte with the original.
files_check() {
    local run label scenario dir=$FILES_TMP/check rc f
    local runs="tcpkit-v1:1G tcpkit-v2:1G tcpkit-v2:4x256M tcpkit-v1-sf:1G tcpkit-v2-sf:1G"
    [ -z "${PORT[files-tls]:-}" ] || runs+=" tcpkit-v1-tls:1G tcpkit-v2-tls:1G"
    for run in $runs; do
        label=${run%%:*}
        scenario=${run#*:}
        mkdir -p "$dir"
        tcpkit_get "$label" "$scenario" "$dir"
        rc=0
        if [ "$scenario" = 1G ]; then
            timed "$dir/$FILES_BIG" "${GET[@]}" >/dev/null || rc=$?
            [ "$rc" -ne 0 ] || cmp -s "$dir/$FILES_BIG" "$FILES_DIR/$FILES_BIG" || rc=1
        else
            tmpfs_prime
            timed /dev/null "${GET[@]}" >/dev/null || rc=$?
            for f in $FILES_PARTS; do
                [ "$rc" -ne 0 ] || cmp -s "$dir/$f" "$FILES_DIR/$f" || rc=1
            done
        fi
        rm -rf "$dir"
        if [ "$rc" -ne 0 ]; then
            log "bench: files: $label $scenario check failed (exit $rc, or the bytes differ)"
            FAILED=1
        fi
    done
}

# The words of $1 in reverse order.
reversed() {
    local w out=""
    for w in $1; do
        out="$w $out"
    done
    echo "$out"
}

# One download: scenario (1G or 4x256M), contender, round.
files_one() {
    local scenario=$1 label=$2 round=$3 rc=0 secs="" bytes got=0 gbps=0 conns f sink=null received=""
    local dir=$FILES_TMP/$2 report=$FILES_TMP/report
    local -a names cmd
    if [ "$scenario" = 1G ]; then
        names=("$FILES_BIG")
        bytes=$FILES_BIG_BYTES
    else
        read -r -a names <<<"$FILES_PARTS"
        bytes=$((${#names[@]} * FILES_PART_BYTES))
        sink=tmpfs
        mkdir -p "$dir"
        tmpfs_prime
    fi
    : >"$report"
    case $label in
    iperf3 | iperf3-128K)
        # iperf3 writes 1 MiB at a time, as tcpkit does (its default, 128
        # KiB, reaches about half the rate over loopback: the second row).
        local len=1M
        [ "$label" = iperf3 ] || len=128K
        if start_iperf3; then
            secs=$(timed "$report" iperf3 -c 127.0.0.1 -p "${PORT[iperf3]}" -n 1G -l "$len" --json) ||
                rc=$?
        else
            rc=125
        fi
        stop_server iperf3
        # The sender must have sent it all; the rate is the receiver's, over
        # its own clock. (The receiver's byte count can fall a few KiB short:
        # it stops counting when the control connection says the test ended.)
        read -r got gbps received < <(python3 -c '
import json, sys
try:
    e = json.load(open(sys.argv[1]))["end"]
    r = e["sum_received"]
    print(e["sum_sent"]["bytes"], "%.3f" % (r["bits_per_second"] / 1e9), r["bytes"])
except Exception:
    print(0, 0, 0)' "$report") || true
        # With 1 MiB writes iperf3 may send one write past -n: at least 1 GiB
        # is what counts.
        [ "$got" -lt "$bytes" ] || got=$bytes
        ;;
    nginx | nginx-tls)
        # One curl for all the files: it keeps the connection and fetches
        # them one after another; -w writes a line per file. Over TLS it
        # verifies nginx's certificate against the test CA.
        cmd=(curl -sf -w '%{http_code} %{num_connects} %{size_download}\n')
        local url=http://127.0.0.1:${PORT[nginx]}
        if [ "$label" = nginx-tls ]; then
            cmd+=(--cacert "$FILES_CERTS/ca.pem")
            url=https://127.0.0.1:${PORT[nginx-tls]}
        fi
        for f in "${names[@]}"; do
            if [ "$sink" = null ]; then
                cmd+=(-o /dev/null)
            else
                cmd+=(-o "$dir/$f")
            fi
            cmd+=("$url/$f")
        done
        secs=$(timed "$report" "${cmd[@]}") || rc=$?
        conns=$(awk '{ n += $2 } END { print n + 0 }' "$report")
        [ "$conns" = 1 ] || log "bench: files $scenario from $label took $conns connections"
        if [ "$sink" = null ]; then
            got=$(awk '{ n += $3 } END { printf "%d", n }' "$report")
        else
            got=$(files_got "$dir" "${names[@]}")
        fi
        ;;
    tcpkit-v1 | tcpkit-v2 | tcpkit-v1-sf | tcpkit-v2-sf | tcpkit-v1-tls | tcpkit-v2-tls)
        tcpkit_get "$label" "$scenario" "$dir"
        secs=$(timed /dev/null "${GET[@]}") || rc=$?
        if [ "$sink" = null ]; then
            got=$bytes # nothing counts /dev/null; files_check compared these bytes
        else
            got=$(files_got "$dir" "${names[@]}")
        fi
        ;;
    esac
    [ "$sink" = null ] || rm -rf "$dir"
    [ -n "$secs" ] || secs=0
    if [ "$rc" -eq 0 ] && [ "$got" != "$bytes" ]; then
        log "bench: files $scenario from $label: $got of $bytes bytes arrived"
        rc=1
    fi
    if [ "$rc" -ne 0 ]; then
        log "bench: files $scenario from $label failed (exit $rc)"
        FAILED=1
        gbps=0
    elif [[ $label != iperf3* ]]; then
        gbps=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.3f", (s > 0 ? b * 8 / s / 1e9 : 0) }')
    fi
    printf '{"scenario":"%s","server":"%s","round":%d,"exit":%d,"sink":"%s","bytes":%d,"received":%d,"seconds":%s,"gbps":%s}\n' \
        "$scenario" "$label" "$round" "$rc" "$sink" "$bytes" "${received:-$got}" "$secs" "$gbps" >>"$FILES"
}

# Whether this kernel has kernel TLS, asked the way tcpkit's servers ask: a
# TCP socket set to the "tls" upper-layer protocol (TCP_ULP) fails with
# ENOENT when the kernel has no tls module, with ENOTCONN when it has one.
# Prints yes, no or unknown.
KTLS_PY='
import errno, socket
s = socket.socket()
try:
    s.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # 31: TCP_ULP
    print("yes")
except OSError as e:
    print({errno.ENOTCONN: "yes", errno.ENOENT: "no"}.get(e.errno, "unknown"))
'

# tls_probe LABEL PORT: the protocol version and cipher suite the TLS server
# on PORT negotiates with `openssl s_client`, which offers OpenSSL's defaults
# as tcpkit get and curl do, into TLS_SEEN[LABEL] and the log.
tls_probe() {
    local label=$1 port=$2 out version cipher
    out=$(timeout 10 openssl s_client -brief -connect "127.0.0.1:$port" \
        -CAfile "$FILES_CERTS/ca.pem" -verify_ip 127.0.0.1 -verify_return_error \
        </dev/null 2>&1) || true
    version=$(sed -n 's/^Protocol version: *//p' <<<"$out")
    cipher=$(sed -n 's/^Ciphersuite: *//p' <<<"$out")
    if [ -z "$version" ] || [ -z "$cipher" ]; then
        log "bench: files: openssl s_client could not complete a handshake with $label"
        TLS_SEEN[$label]="?"
        return
    fi
    TLS_SEEN[$label]="$version $cipher"
    log "bench: files: $label negotiates $version $cipher"
}

if section files; then
    missing=""
    NGINX=$(command -v nginx || { [ ! -x /usr/sbin/nginx ] || echo /usr/sbin/nginx; })
    [ -n "$NGINX" ] || missing+=" nginx"
    for tool in iperf3 curl python3; do
        command -v "$tool" >/dev/null || missing+=" $tool"
    done
    if "$TCPKIT" file-server --help >/dev/null 2>&1 && "$TCPKIT" get --help >/dev/null 2>&1; then
        FILES_TCPKIT=1
    else
        log "tcpkit: not built yet"
    fi
    if [ -n "$missing" ]; then
        log "bench: files:$missing missing (scripts/deps.sh bench installs them)"
        FAILED=1
    elif ! FILES_TMP=$(mktemp -d /dev/shm/tcpkit-bench-XXXXXX); then
        log "bench: files: no tmpfs at /dev/shm for the downloads"
        FILES_TMP=""
        FAILED=1
    else
        mkdir -p "$FILES_DIR"
        files_make "$FILES_BIG" "$FILES_BIG_BYTES"
        for f in $FILES_PARTS; do
            files_make "$f" "$FILES_PART_BYTES"
        done
        # Into the page cache before anything is timed.
        for f in "$FILES_BIG" $FILES_PARTS; do
            cat "$FILES_DIR/$f" >/dev/null
        done
        # A fresh test CA and server certificate for the TLS downloads, every
        # run (bench/out/ is not committed).
        if scripts/certs.sh "$FILES_CERTS"; then
            FILES_TLS=1
        else
            log "bench: files: scripts/certs.sh failed (openssl missing?); no TLS downloads"
            FAILED=1
        fi
        FILES_KTLS=$(python3 -c "$KTLS_PY" || echo unknown)
        log "bench: files: kernel TLS: $FILES_KTLS"
        # The downloads of each scenario, contender:scenario; iperf3 sends
        # 1 GiB from memory. A TLS download runs right after the same one
        # in plaintext, so the two are close in time.
        one=""
        many=""
        if start_nginx; then
            one+=" nginx:1G"
            [ -z "${PORT[nginx-tls]:-}" ] || one+=" nginx-tls:1G"
            many+=" nginx:4x256M"
        else
            FAILED=1
        fi
        if [ "$FILES_TCPKIT" = 1 ]; then
            if start_server files && start_server files-sf; then
                if [ "$FILES_TLS" = 1 ]; then
                    start_server files-tls || FAILED=1
                fi
                if [ -n "${PORT[files-tls]:-}" ]; then
                    one+=" tcpkit-v1:1G tcpkit-v1-tls:1G tcpkit-v2:1G tcpkit-v2-tls:1G"
                else
                    one+=" tcpkit-v1:1G tcpkit-v2:1G"
                fi
                one+=" tcpkit-v1-sf:1G tcpkit-v2-sf:1G"
                many+=" tcpkit-v2:4x256M"
                files_check
            else
                FAILED=1
            fi
        fi
        [ -z "${PORT[files-tls]:-}" ] || tls_probe tcpkit "${PORT[files-tls]}"
        [ -z "${PORT[nginx-tls]:-}" ] || tls_probe nginx "${PORT[nginx-tls]}"
        log "bench: files: $ROUNDS rounds, $FILES_THREADS server threads, downloads into $FILES_TMP"
        # Every round runs every download back to back, so a ratio within a
        # round is not skewed by the machine slowing down between rounds; the
        # contenders of a scenario run one after another, in the reverse
        # order every other round, so none of them always goes first.
        for round in $(seq "$ROUNDS"); do
            runs="iperf3:1G iperf3-128K:1G $one $many"
            if [ $((round % 2)) = 0 ]; then
                runs="iperf3-128K:1G iperf3:1G $(reversed "$one") $(reversed "$many")"
            fi
            for run in $runs; do
                log "bench: files ${run#*:} round $round/$ROUNDS -> ${run%%:*}"
                files_one "${run#*:}" "${run%%:*}" "$round"
            done
        done
        stop_server nginx
        stop_server files
        stop_server files-sf
        stop_server files-tls
    fi
fi

# Load balancers: bench/balance.sh runs the whole section (its own servers,
# CPU placement and clean-up) and prints its tables, kept for the end.
if section balance; then
    bench/balance.sh >"$BALANCE_TABLE" || FAILED=1
fi

# Port scans: bench/scan.sh runs the whole section (a fresh network namespace
# per run, its own listeners inside) and prints its table, kept for the end.
if section scan; then
    bench/scan.sh >"$SCAN_TABLE" || FAILED=1
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
    printf ']},\n"files":{"file_bytes":%d,"part_bytes":%d,"server_threads":%d,"tcpkit":%s,\n' \
        "$FILES_BIG_BYTES" "$FILES_PART_BYTES" "$FILES_THREADS" \
        "$([ "$FILES_TCPKIT" = 1 ] && echo true || echo false)"
    printf '"tls":{"kernel_tls":"%s","nginx_ktls_option":"%s","tcpkit":"%s","nginx":"%s"},"runs":[\n' \
        "${FILES_KTLS:-}" "$NGINX_KTLS" "${TLS_SEEN[tcpkit]:-}" "${TLS_SEEN[nginx]:-}"
    sed '$!s/$/,/' "$FILES"
    printf ']},\n"balance":{"runs":[\n'
    sed '$!s/$/,/' "$BALANCE"
    printf ']},\n"scan":{"runs":[\n'
    sed '$!s/$/,/' "$SCAN"
    printf ']}}\n'
} >"$OUT/results.json"

# The tables, from the JSON lines: awk pulls "key":value pairs apart.
TABLE_AWK=$AWK_LIB
# One row per scenario and server: the round with the median req/s, how far
# the rounds spread around it, and the median of the per-round ratios to the
# floor (each round's servers ran back to back, so a ratio within a round is
# not skewed by the machine slowing down between rounds).
# Everything from here to the report also goes to bench/out/tables.txt,
# which bench/report.py turns into docs/BENCHMARKS.md.
{
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
# Files: one row per scenario and contender, the median Gbit/s over the
# rounds and their spread, failed runs, and the medians of the per-round
# ratios to iperf3's single stream and to nginx in the same scenario (a TLS
# row to nginx over TLS), and of a TLS row to the same download in plaintext.
if [ -s "$FILES" ]; then
    echo
    awk "$TABLE_AWK"'
{
    k = str("scenario") " " str("server")
    if (!(k in n))
        keys[++nk] = k
    n[k]++
    row[k, n[k]] = $0
    errs[k] += (num("exit") != 0)
    gbps_of[str("scenario"), str("server"), num("round")] = num("gbps")
}
function vs(scenario, other,   a, r, nr, o) {
    split("", r)
    nr = 0
    for (a = 1; a <= n[k]; a++) {
        $0 = row[k, a]
        o = gbps_of[scenario == "" ? str("scenario") : scenario, other, num("round")]
        if (o > 0)
            r[++nr] = num("gbps") / o
    }
    return nr > 0 ? sprintf("%.2f", median(r, nr)) : "-"
}
END {
    printf "%-8s %-13s %-9s %7s %7s %6s %9s %8s %8s\n", "scenario", "server", "into", "Gbit/s",
           "spread", "errors", "vs iperf3", "vs nginx", "vs plain"
    for (j = 1; j <= nk; j++) {
        k = keys[j]
        split("", v)
        for (a = 1; a <= n[k]; a++) {
            $0 = row[k, a]
            v[a] = num("gbps")
        }
        m = median(v, n[k])
        spread = m > 0 ? (v[n[k]] - v[1]) / m * 100 : 0
        $0 = row[k, 1]
        name = str("scenario")
        server = str("server")
        into = server ~ /^iperf3/ ? "memory" : str("sink") == "null" ? "/dev/null" : "tmpfs"
        tls = server ~ /-tls$/
        printf "%-8s %-13s %-9s %7.2f %6.0f%% %6d %9s %8s %8s\n", name, server, into, m, spread,
               errs[k], vs("1G", "iperf3"),
               server ~ /^iperf3/ ? "-" : vs("", tls ? "nginx-tls" : "nginx"),
               tls ? vs("", substr(server, 1, length(server) - 4)) : "-"
    }
}' "$FILES"
    [ "$FILES_TCPKIT" = 1 ] || echo "tcpkit: not built yet"
    if [ -n "${TLS_SEEN[tcpkit]:-}${TLS_SEEN[nginx]:-}" ]; then
        echo "tls: tcpkit ${TLS_SEEN[tcpkit]:--}, nginx ${TLS_SEEN[nginx]:--} (openssl s_client)"
        case $FILES_KTLS in
        yes) ktls="yes: the file can go out with sendfile() and be encrypted by the kernel" ;;
        no) ktls="no: both servers encrypt in user space" ;;
        *) ktls=unknown ;;
        esac
        echo "kernel TLS: $ktls (nginx: ssl_conf_command Options KTLS $NGINX_KTLS)"
    fi
fi
# Balance: its tables as bench/balance.sh printed them (each starts with an
# empty line).
cat "$BALANCE_TABLE"
# Scan: its table as bench/scan.sh printed it (starts with an empty line).
cat "$SCAN_TABLE"
} | tee "$OUT/tables.txt"
echo
echo "raw results: bench/out/results.json"
sections=${SECTIONS# }
if BENCH_SECTIONS=${sections% } python3 bench/report.py "$OUT" docs/BENCHMARKS.md; then
    echo "report: docs/BENCHMARKS.md"
else
    FAILED=1
fi
exit "$FAILED"
