#!/usr/bin/env bash
# TCP load balancers side by side: tcpkit's balance command, HAProxy (TCP
# mode) and nginx's stream module, each with one thread on a core of its
# own, in front of the same backends; see "Load balancing" in
# bench/README.md. bench/run.sh runs it as its "balance" section; on its own:
#   bench/balance.sh            (BENCH_SECONDS and BENCH_ROUNDS as for run.sh)
#
# Scenarios, every round running each target once, back to back:
#   100c-p1, 100c-p16  tcpkit bench: 100 connections, 1 or 16 requests of 64 B
#                      in flight, through each proxy to two tcpkit echo
#                      servers (roundrobin), and directly to one of them
#   bulk               one iperf3 stream through each proxy to an iperf3
#                      server, and directly
# Placement: the proxy under test runs alone on one CPU; the load generator
# and every backend share the other (taskset), the same for every proxy.
#
# Results: one JSON line per run in bench/out/balance.jsonl, the table on
# stdout, progress on stderr; exit 1 if a run failed. Everything listens on
# 127.0.0.1 only, every wait has a deadline, and every process started here
# is stopped by its PID on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
TCPKIT=$ROOT/build/tcpkit
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_ROUNDS must be a positive integer" >&2; exit 2; }
[[ $SECS =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "bench: BENCH_SECONDS must be a number" >&2; exit 2; }
# iperf3 counts whole seconds: BENCH_SECONDS rounded up, at least 1.
BULK_SECS=$(awk -v s="$SECS" 'BEGIN { t = int(s); if (t < s) t++; print (t < 1 ? 1 : t) }')
READY_TIMEOUT=15 # seconds a server gets to listen
CONNS=100        # client connections of the echo scenarios
SIZE=64          # bytes per request line
MAXCONN=4096     # HAProxy's maxconn, nginx's worker_connections
NGINX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so # Debian's libnginx-mod-stream
RESULTS=$OUT/balance.jsonl
TABLE_ONLY=0
case ${1:-} in
"") ;;
--table) TABLE_ONLY=1 ;; # only print the tables of the last run's balance.jsonl
*) echo "usage: bench/balance.sh [--table]" >&2; exit 2 ;;
esac

declare -A PID PORT DRAIN
TMP="" # configurations, pid files and nginx's prefixes; removed on exit
FAILED=0

log() { printf '%s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source bench/lib.sh

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    local name
    for name in "${!PID[@]}"; do
        stop_server "$name"
    done
    if [ -n "$TMP" ]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Command prefixes that put a command on the load side's or the proxy's CPU
# (taskset execs the command, so $! is the command's own PID); empty with a
# single CPU. Set by run_bench.
PIN_LOAD=()
PIN_PROXY=()

# A port that was free on 127.0.0.1 a moment ago.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether something accepts connections on 127.0.0.1:PORT.
accepts() {
    # shellcheck disable=SC2016 # $1 is the inner shell's
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# start_reported NAME SIDE COMMAND...: starts COMMAND on SIDE's CPU (load or
# proxy) and waits for its "listening on [HOST:]PORT" line; the port goes to
# PORT[NAME], its output on to bench/out/balance-NAME.log.
start_reported() {
    local name=$1 fifo="$TMP/$1.fifo"
    local -a pin=("${PIN_LOAD[@]}")
    [ "$2" = load ] || pin=("${PIN_PROXY[@]}")
    shift 2
    rm -f "$fifo"
    mkfifo "$fifo"
    "${pin[@]}" "$@" >"$fifo" 2>&1 &
    wait_listening "$name" "$fifo" "$OUT/balance-$name.log"
}

# start_polled NAME PORT COMMAND...: for servers that cannot report the port
# they bound (HAProxy, nginx): COMMAND, pinned to the proxy's CPU, was given
# PORT; ready once a connection to it is accepted, polled every 0.1 s up to
# READY_TIMEOUT.
start_polled() {
    local name=$1 port=$2 t0=$SECONDS
    shift 2
    "${PIN_PROXY[@]}" "$@" >>"$OUT/balance-$name.log" 2>&1 &
    PID[$name]=$!
    while [ $((SECONDS - t0)) -lt "$READY_TIMEOUT" ] && kill -0 "${PID[$name]}" 2>/dev/null; do
        # (Still alive: not someone else who took the port meanwhile.)
        if accepts "$port" && kill -0 "${PID[$name]}" 2>/dev/null; then
            PORT[$name]=$port
            return 0
        fi
        sleep 0.1
    done
    stop_server "$name"
    log "bench: $name did not accept connections on port $port (see bench/out/balance-$name.log)"
    return 1
}

stop_server() {
    local name=$1
    stop_pid "$name"
    # nginx's error log, from the directory removed on exit.
    if [ -s "$TMP/$name/error.log" ]; then
        cat "$TMP/$name/error.log" >>"$OUT/balance-$name.log"
        : >"$TMP/$name/error.log"
    fi
    unset "PORT[$name]"
}

# The backends: two tcpkit echo servers with one thread each, and the port
# the bulk runs' iperf3 server (one test per start) listens on.
start_backends() {
    start_server_echo echo1 && start_server_echo echo2 || return 1
    BULK_PORT=$(free_port)
}
start_server_echo() {
    start_reported "$1" load "$TCPKIT" echo-server --listen 127.0.0.1:0 --threads 1 --log-level warn
}
start_iperf3() {
    # --forceflush, or its "Server listening on PORT" line sits in a buffer.
    start_reported iperf3 load iperf3 -s -1 -B 127.0.0.1 -p "$BULK_PORT" --forceflush
}

# One proxy instance: a proxy (tcpkit, haproxy, nginx), a role (echo: both
# echo servers; bulk: the iperf3 server) and the backends' ports. It goes in
# PID[PROXY-ROLE] and PORT[PROXY-ROLE].
start_proxy() {
    local proxy=$1 role=$2 name=$1-$2 port attempt dir=$TMP/$1-$2 b
    shift 2
    local -a backends=("$@")
    mkdir -p "$dir"
    case $proxy in
    tcpkit)
        local -a args=()
        for b in "${backends[@]}"; do
            args+=(--backend "127.0.0.1:$b")
        done
        start_reported "$name" proxy "$TCPKIT" balance --listen 127.0.0.1:0 "${args[@]}" \
            --algo roundrobin --threads 1 --log-level warn --check-interval 0
        return
        ;;
    esac
    for attempt in 1 2 3; do
        port=$(free_port)
        case $proxy in
        haproxy)
            {
                printf 'global\n    nbthread 1\n    maxconn %d\n    pidfile %s/haproxy.pid\n' \
                    "$MAXCONN" "$dir"
                printf 'defaults\n    mode tcp\n    maxconn %d\n' "$MAXCONN"
                printf '    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n'
                printf 'listen %s\n    bind 127.0.0.1:%d\n    balance roundrobin\n' "$role" "$port"
                for b in "${backends[@]}"; do
                    printf '    server b%d 127.0.0.1:%d\n' "$b" "$b"
                done
            } >"$dir/haproxy.cfg"
            # -db: in the foreground, one process.
            start_polled "$name" "$port" haproxy -db -f "$dir/haproxy.cfg" && return 0
            ;;
        nginx)
            {
                printf 'load_module %s;\nworker_processes 1;\n' "$NGINX_STREAM"
                printf 'pid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$dir" "$dir"
                printf 'events { worker_connections %d; }\n' "$MAXCONN"
                printf 'stream {\n    upstream %s {\n' "$role"
                for b in "${backends[@]}"; do
                    printf '        server 127.0.0.1:%d;\n' "$b"
                done
                printf '    }\n    server {\n        listen 127.0.0.1:%d;\n' "$port"
                printf '        proxy_pass %s;\n        proxy_timeout 1h;\n    }\n}\n' "$role"
            } >"$dir/nginx.conf"
            start_polled "$name" "$port" "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
                -g 'daemon off;' && return 0
            ;;
        esac
        log "bench: $name: attempt $attempt failed"
    done
    return 1
}

# CPU time (clock ticks) a process and its children have used: nginx
# relays in its worker, a child of the master we started.
cpu_ticks() {
    local pid=$1 kids t=0 p
    kids=$(pgrep -P "$pid" || true)
    for p in $pid $kids; do
        # utime and stime, fields 14 and 15 (the name in field 2 has no spaces here).
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)

# Busy time (clock ticks) of the proxy's CPU, whoever used it: all of
# /proc/stat's fields for that CPU but idle and iowait.
core_ticks() {
    awk -v cpu="cpu$PROXY_CPU" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# What a run cost the proxy: cpu_begin TARGET NAME before, cpu_end TARGET
# NAME after prints the JSON fields: cpu_s, the CPU time of the proxy
# instance NAME (0 for direct); other_s, the time anything else kept the
# proxy's CPU busy; wall_s. On an idle machine other_s is kernel work no
# process is charged for (softirqs run from the idle loop: a few % of the
# core, up to 9 % behind tcpkit's splice() in bulk runs); past 15 % of
# the run something else ran there, and a warning says so (not for direct,
# which leaves that core idle).
cpu_begin() {
    T0=$EPOCHREALTIME
    CPU0=0
    [ "$1" = direct ] || CPU0=$(cpu_ticks "${PID[$2]}")
    CORE0=$(core_ticks)
}
cpu_end() {
    local t1=$EPOCHREALTIME cpu1=0 core1
    [ "$1" = direct ] || cpu1=$(cpu_ticks "${PID[$2]}")
    core1=$(core_ticks)
    # Unpinned, the proxy's CPU is everyone's: nothing is "other".
    [ "$LOAD_CPU" != "$PROXY_CPU" ] || core1=$((CORE0 + cpu1 - CPU0))
    awk -v c="$((cpu1 - CPU0))" -v o="$((core1 - CORE0 - (cpu1 - CPU0)))" -v hz="$HZ" \
        -v a="$T0" -v b="$t1" -v name="$1" -v cpu="$PROXY_CPU" 'BEGIN {
        if (o < 0)
            o = 0
        if (name != "direct" && o / hz > (b - a) * 0.15)
            printf "bench: balance: while %s ran, other work kept CPU %d busy %.0f%% of the time\n",
                   name, cpu, o / hz / (b - a) * 100 > "/dev/stderr"
        printf "\"cpu_s\":%.3f,\"other_s\":%.3f,\"wall_s\":%.3f", c / hz, o / hz, b - a
    }'
}

# One echo run: scenario, target (direct or a proxy), pipeline depth, round.
echo_one() {
    local scenario=$1 target=$2 depth=$3 round=$4 json rc=0 limit port cpu
    if [ "$target" = direct ]; then
        port=${PORT[echo1]}
    else
        port=${PORT[$target-echo]}
    fi
    limit=$(awk -v s="$SECS" 'BEGIN { printf "%d", s + 60 }')
    cpu_begin "$target" "$target-echo"
    json=$(timeout "$limit" "${PIN_LOAD[@]}" "$TCPKIT" bench --json -c "$CONNS" -p "$depth" \
        -s "$SIZE" -d "$SECS" -t 1 "127.0.0.1:$port") || rc=$?
    cpu=$(cpu_end "$target" "$target-echo")
    if [ "$rc" -ne 0 ] || [ -z "$json" ]; then
        log "bench: balance $scenario through $target failed (exit $rc)"
        FAILED=1
        [ -n "$json" ] || json='{"requests":0,"errors":0,"rps":0,"p50_us":0,"p99_us":0,"p999_us":0,"max_us":0}'
    fi
    printf '{"scenario":"%s","server":"%s","round":%d,"exit":%d,%s,%s\n' "$scenario" "$target" \
        "$round" "$rc" "$cpu" "${json#\{}" >>"$RESULTS"
}

# One bulk run: a fresh iperf3 server, one stream for BULK_SECS through the
# target; the rate is the receiver's, over iperf3's clock.
bulk_one() {
    local target=$1 round=$2 rc=0 port gbps=0 sent=0 cpu report=$TMP/iperf3.json
    : >"$report"
    if [ "$target" = direct ]; then
        port=$BULK_PORT
    else
        port=${PORT[$target-bulk]}
    fi
    if start_iperf3; then
        cpu_begin "$target" "$target-bulk"
        timeout $((BULK_SECS + 30)) "${PIN_LOAD[@]}" iperf3 -c 127.0.0.1 -p "$port" \
            -t "$BULK_SECS" -l 128K --connect-timeout 5000 -J >"$report" \
            2>>"$OUT/balance-iperf3.log" || rc=$?
        cpu=$(cpu_end "$target" "$target-bulk")
    else
        rc=125
        cpu='"cpu_s":0,"other_s":0,"wall_s":0'
    fi
    stop_server iperf3
    read -r sent gbps < <(python3 -c '
import json, sys
try:
    e = json.load(open(sys.argv[1]))["end"]
    print(e["sum_sent"]["bytes"], "%.3f" % (e["sum_received"]["bits_per_second"] / 1e9))
except Exception:
    print(0, 0)' "$report") || true
    if [ "$rc" -eq 0 ] && [ "$sent" -eq 0 ]; then
        rc=1
    fi
    if [ "$rc" -ne 0 ]; then
        log "bench: balance bulk through $target failed (exit $rc, see bench/out/balance-iperf3.log)"
        python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("error", ""))' \
            "$report" >>"$OUT/balance-iperf3.log" 2>/dev/null || true
        FAILED=1
        gbps=0
    fi
    printf '{"scenario":"bulk","server":"%s","round":%d,"exit":%d,%s,"seconds":%d,"bytes":%d,"gbps":%s}\n' \
        "$target" "$round" "$rc" "$cpu" "$BULK_SECS" "$sent" "$gbps" >>"$RESULTS"
}

# The words of $1 rotated left by $2.
rotated() {
    local -a w
    read -r -a w <<<"$1"
    local n=${#w[@]} i out=""
    for ((i = 0; i < n; i++)); do
        out+="${w[(i + $2) % n]} "
    done
    echo "$out"
}

# The whole measurement; every variable is global, for the functions above.
run_bench() {
    [ -x "$TCPKIT" ] || { log "bench: $TCPKIT is missing; run 'make all' first"; exit 1; }
    for tool in python3 taskset pgrep; do
        command -v "$tool" >/dev/null ||
            { log "bench: balance: $tool is missing (scripts/deps.sh bench installs it)"; exit 1; }
    done
    mkdir -p "$OUT"
    : >"$RESULTS"
    rm -f "$OUT"/balance-*.log # server logs of this run only
    TMP=$(mktemp -d "$OUT/balance.XXXXXX")

    # A descriptor per connection on each side of a proxy, and HAProxy sizes its
    # own limit from maxconn.
    want=$((2 * MAXCONN + 1024))
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] || ulimit -Hn "$want" 2>/dev/null || want=$hard
    if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
        ulimit -n "$want"
    fi

    # CPU placement: the first CPU this script may use runs the load generator
    # and the backends, the second the proxy under test. With a single CPU
    # nothing is pinned.
    CPUS=$(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')
    read -r LOAD_CPU PROXY_CPU _ <<<"$CPUS $CPUS"
    if [ "$LOAD_CPU" = "$PROXY_CPU" ]; then
        log "bench: balance: one CPU only; nothing is pinned"
    else
        PIN_LOAD=(taskset -c "$LOAD_CPU")
        PIN_PROXY=(taskset -c "$PROXY_CPU")
    fi
    missing=""
    NGINX=$(command -v nginx || { [ ! -x /usr/sbin/nginx ] || echo /usr/sbin/nginx; })
    [ -n "$NGINX" ] || missing+=" nginx"
    [ -f "$NGINX_STREAM" ] || missing+=" libnginx-mod-stream"
    command -v haproxy >/dev/null || { [ ! -x /usr/sbin/haproxy ] || PATH=$PATH:/usr/sbin; }
    for tool in haproxy iperf3; do
        command -v "$tool" >/dev/null || missing+=" $tool"
    done
    [ -z "$missing" ] ||
        log "bench: balance:$missing missing (scripts/deps.sh bench installs them)"

    TARGETS="direct"
    if ! start_backends; then
        FAILED=1
        TARGETS=""
    else
        for proxy in tcpkit haproxy nginx; do
            case $proxy in
            tcpkit) [ "$BALANCE_TCPKIT" = 1 ] || continue ;;
            haproxy) [[ $missing != *haproxy* ]] || { FAILED=1; continue; } ;;
            nginx) [[ $missing != *nginx* ]] || { FAILED=1; continue; } ;;
            esac
            if start_proxy "$proxy" echo "${PORT[echo1]}" "${PORT[echo2]}" &&
                start_proxy "$proxy" bulk "$BULK_PORT"; then
                TARGETS+=" $proxy"
            else
                FAILED=1
            fi
        done
    fi

    if [ -n "$TARGETS" ]; then
        log "bench: balance: ${SECS}s per echo run, ${BULK_SECS}s per bulk run, $ROUNDS rounds;" \
            "proxies on CPU $PROXY_CPU, load and backends on CPU $LOAD_CPU; targets:$TARGETS"
        # Every round runs each target once, back to back, starting one target
        # further along each round, so a slow spell of the machine falls on all
        # of them and none of them always goes first.
        ntargets=$(wc -w <<<"$TARGETS")
        for scenario in "100c-p1:1" "100c-p16:16" "bulk:0"; do
            IFS=: read -r sname depth <<<"$scenario"
            for round in $(seq "$ROUNDS"); do
                for target in $(rotated "$TARGETS" $(((round - 1) % ntargets))); do
                    log "bench: balance $sname round $round/$ROUNDS -> $target"
                    if [ "$sname" = bulk ]; then
                        [[ $missing != *iperf3* ]] || { FAILED=1; continue; }
                        bulk_one "$target" "$round"
                    else
                        echo_one "$sname" "$target" "$depth" "$round"
                    fi
                done
            done
        done
    fi
    for name in "${!PID[@]}"; do
        stop_server "$name"
    done
}

BALANCE_TCPKIT=0
if "$TCPKIT" balance --help >/dev/null 2>&1; then
    BALANCE_TCPKIT=1
fi
[ "$TABLE_ONLY" = 1 ] || run_bench

# The tables, from the JSON lines: awk pulls "key":value pairs apart. One
# row per scenario and target: the median over the rounds and the spread
# (max - min) / median; the proxy's CPU use; the medians of the per-round
# ratios to direct, HAProxy and nginx (the targets of a round ran back to
# back, so a ratio within a round is not skewed by the machine slowing down
# between rounds).
# shellcheck disable=SC2016 # awk code, not shell
TABLE_AWK="$AWK_LIB"'
{
    k = str("scenario") " " str("server")
    if (!(k in n))
        keys[++nk] = k
    n[k]++
    row[k, n[k]] = $0
    errs[k] += num("errors") + (num("exit") != 0 && num("errors") == 0)
    val_of[str("scenario"), str("server"), num("round")] = num(METRIC)
    if (num("exit") == 0)
        p99_of[str("scenario"), str("server"), num("round")] = num("p99_us")
}
# Median over the rounds of the figure of this row divided by the figure of
# the other target in the same round.
function vs(other,   a, r, nr, o) {
    split("", r)
    nr = 0
    for (a = 1; a <= n[k]; a++) {
        $0 = row[k, a]
        o = val_of[str("scenario"), other, num("round")]
        if (o > 0)
            r[++nr] = num(METRIC) / o
    }
    return nr > 0 ? sprintf("%.2f", median(r, nr)) : "-"
}
# Median over the rounds of p99 minus the p99 of direct in the same round,
# in milliseconds; failed runs left out.
function over_direct(   a, r, nr, o) {
    split("", r)
    nr = 0
    for (a = 1; a <= n[k]; a++) {
        $0 = row[k, a]
        o = p99_of[str("scenario"), "direct", num("round")]
        if (num("exit") == 0 && o > 0)
            r[++nr] = num("p99_us") - o
    }
    return nr > 0 ? sprintf("%+.3f", median(r, nr) / 1000) : "-"
}
# The proxy: median share of its CPU in percent, and CPU time per unit of
# work (microseconds per request, seconds per GB).
function cpu(per,   a, c, u, nc, x) {
    split("", c)
    split("", u)
    nc = 0
    for (a = 1; a <= n[k]; a++) {
        $0 = row[k, a]
        if (num("wall_s") <= 0 || num("exit") != 0)
            continue
        c[++nc] = num("cpu_s") / num("wall_s") * 100
        x = per == "req" ? num("requests") : num("bytes") / 1e9
        u[nc] = x > 0 ? num("cpu_s") / x * (per == "req" ? 1e6 : 1) : 0
    }
    CPU_PCT = nc > 0 ? sprintf("%.0f%%", median(c, nc)) : "-"
    CPU_PER = nc > 0 ? sprintf(per == "req" ? "%.2f" : "%.3f", median(u, nc)) : "-"
}
'
if [ -s "$RESULTS" ]; then
    if grep -q '"scenario":"100c-' "$RESULTS"; then
        echo
        grep '"scenario":"100c-' "$RESULTS" | awk -v METRIC=rps "$TABLE_AWK"'
END {
    printf "%-9s %-7s %9s %6s %7s %7s %8s %5s %6s %6s %9s %10s %8s\n", "scenario", "server",
           "req/s", "spread", "p50 ms", "p99 ms", "+p99 ms", "CPU", "us/req", "errors",
           "vs direct", "vs haproxy", "vs nginx"
    for (j = 1; j <= nk; j++) {
        k = keys[j]
        split("", v)
        for (a = 1; a <= n[k]; a++) {
            $0 = row[k, a]
            v[a] = num("rps")
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
        server = str("server")
        p50 = num("p50_us") / 1000
        p99 = num("p99_us") / 1000
        direct = server == "direct"
        if (direct) {
            CPU_PCT = "-"
            CPU_PER = "-"
        } else
            cpu("req")
        printf "%-9s %-7s %9.0f %5.0f%% %7.3f %7.3f %8s %5s %6s %6d %9s %10s %8s\n", str("scenario"),
               server, m, spread, p50, p99, direct ? "-" : over_direct(), CPU_PCT, CPU_PER,
               errs[k], vs("direct"), vs("haproxy"), vs("nginx")
    }
}'
    fi
    if grep -q '"scenario":"bulk"' "$RESULTS"; then
        echo
        grep '"scenario":"bulk"' "$RESULTS" | awk -v METRIC=gbps "$TABLE_AWK"'
END {
    printf "%-9s %-7s %9s %6s %5s %6s %6s %9s %10s %8s\n", "scenario", "server", "Gbit/s",
           "spread", "CPU", "s/GB", "errors", "vs direct", "vs haproxy", "vs nginx"
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
        server = str("server")
        if (server == "direct") {
            CPU_PCT = "-"
            CPU_PER = "-"
        } else
            cpu("GB")
        printf "%-9s %-7s %9.2f %5.0f%% %5s %6s %6d %9s %10s %8s\n", "bulk", server, m, spread,
               CPU_PCT, CPU_PER, errs[k], vs("direct"), vs("haproxy"), vs("nginx")
    }
}'
    fi
fi
# Runs during which something else kept the proxy's CPU busy (see cpu_end).
# shellcheck disable=SC2016 # awk code, not shell
busy=$(awk '{
    o = w = 0
    if (match($0, /"other_s":[0-9.]+/))
        o = substr($0, RSTART + 10, RLENGTH - 10) + 0
    if (match($0, /"wall_s":[0-9.]+/))
        w = substr($0, RSTART + 9, RLENGTH - 9) + 0
    if (w > 0 && o > w * 0.15 && $0 !~ /"server":"direct"/)
        n++
} END { print n + 0 }' "$RESULTS" 2>/dev/null || echo 0)
if [ "$busy" -gt 0 ]; then
    echo "note: in $busy proxy runs other work took more than 15 % of the proxy's CPU:" \
        "the machine was busy"
fi
grep -qs '"server":"tcpkit"' "$RESULTS" || [ "$BALANCE_TCPKIT" = 1 ] || echo "tcpkit: not built yet"
exit "$FAILED"
