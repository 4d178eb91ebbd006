#!/usr/bin/env bash
# Full-range TCP connect scans side by side: `tcpkit scan 127.0.0.1 -p -`
# against `nmap -sT -Pn -n -T5 -p- 127.0.0.1`; see "Port scanning" in
# bench/README.md. bench/run.sh runs it as its "scan" section; on its own:
#   bench/scan.sh            (BENCH_ROUNDS as for run.sh)
#   bench/scan.sh --table    only print the table of the last run's scan.jsonl
#
# Every run gets a fresh network namespace (`unshare -rn`) holding nothing
# but its loopback and the listeners opened in it: the host's own loopback
# ports, which belong to other software, are never scanned. Each round runs
# tcpkit and nmap once, back to back, the first one alternating. A run's
# result is its open ports and its counts of closed and filtered ones; a
# run whose result differs from the listeners opened (or from the other
# scanner's) is an error.
#
# Results: one JSON line per run in bench/out/scan.jsonl, the table on
# stdout, progress on stderr; exit 1 if a run failed or the results differed.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
# shellcheck source=bench/lib.sh
source bench/lib.sh
TCPKIT=$ROOT/build/tcpkit
ROUNDS=${BENCH_ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_ROUNDS must be a positive integer" >&2; exit 2; }
RESULTS=$OUT/scan.jsonl
TOTAL=65535
# Listeners of every run: well-known ports, and two inside the ephemeral
# range, where a probe can pick its own port as its source (self-connect).
LISTEN="22 80 443 3306 8080 31337 40001 50000 60000"
RUN_LIMIT=120 # seconds one scan may take
TABLE_ONLY=0
case ${1:-} in
"") ;;
--table) TABLE_ONLY=1 ;;
*) echo "usage: bench/scan.sh [--table]" >&2; exit 2 ;;
esac
FAILED=0

log() { printf '%s\n' "$*" >&2; }

# Runs inside the namespace: brings lo up, opens the listeners, runs the
# scanner, prints one JSON object: exit status, wall seconds, the open ports
# and the closed and filtered counts the scanner reported.
# shellcheck disable=SC2016 # python code, not shell
NS_RUN='
import json, re, socket, subprocess, sys, time
tool, limit, listen, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
held = []
for p in listen:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(p)))
    s.listen(1024)
    held.append(s)
t0 = time.monotonic()
try:
    cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=limit)
    rc, text = cp.returncode, cp.stdout.decode("utf-8", "replace")
except subprocess.TimeoutExpired:
    rc, text = 124, ""
secs = time.monotonic() - t0
opn, closed, filtered = [], -1, -1
if tool == "nmap":
    # -oG -: "Ports: 22/open/tcp//ssh///, ...\tIgnored State: closed (65526)"
    for line in text.splitlines():
        if "Ports:" not in line:
            continue
        closed = filtered = 0
        for e in line.split("Ports:", 1)[1].split("\t")[0].split(","):
            f = e.strip().split("/")
            if len(f) > 1:
                if f[1] == "open":
                    opn.append(int(f[0]))
                elif f[1] == "closed":
                    closed += 1
                elif f[1] == "filtered":
                    filtered += 1
        m = re.search(r"Ignored State: (\w+) \((\d+)\)", line)
        if m and m.group(1) == "closed":
            closed += int(m.group(2))
        elif m and m.group(1) == "filtered":
            filtered += int(m.group(2))
else:
    # The table: "22/tcp  open  ssh" rows and "Not shown: N closed, M filtered".
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0].endswith("/tcp") and f[1] == "open":
            opn.append(int(f[0][:-4]))
        m = re.match(r"Not shown: (\d+) closed, (\d+) filtered", line)
        if m:
            closed, filtered = int(m.group(1)), int(m.group(2))
print(json.dumps({"exit": rc, "seconds": round(secs, 4), "open": sorted(opn),
                  "closed": closed, "filtered": filtered}, separators=(",", ":")))
'

# One run: tool, round. Appends its JSON line to the results.
scan_one() {
    local tool=$1 round=$2 json rc=0
    local -a cmd
    case $tool in
    tcpkit) cmd=("$TCPKIT" scan 127.0.0.1 -p -) ;;
    nmap) cmd=(nmap -sT -Pn -n -T5 -p- -oG - 127.0.0.1) ;;
    esac
    json=$(unshare -rn python3 -c "$NS_RUN" "$tool" "$RUN_LIMIT" "$LISTEN" "${cmd[@]}") || rc=$?
    if [ "$rc" -ne 0 ] || [ -z "$json" ]; then
        log "bench: scan with $tool failed to run (exit $rc)"
        json='{"exit":125,"seconds":0,"open":[],"closed":-1,"filtered":-1}'
    fi
    printf '{"scenario":"full-range","server":"%s","round":%d,"ports":%d,%s\n' "$tool" "$round" \
        "$TOTAL" "${json#\{}" >>"$RESULTS"
}

run_bench() {
    [ -x "$TCPKIT" ] || { log "bench: $TCPKIT is missing; run 'make all' first"; exit 1; }
    for tool in python3 unshare ip; do
        command -v "$tool" >/dev/null || { log "bench: scan: $tool is missing"; exit 1; }
    done
    unshare -rn true 2>/dev/null ||
        { log "bench: scan: cannot create a network namespace (unshare -rn)"; exit 1; }
    mkdir -p "$OUT"
    : >"$RESULTS"
    TOOLS="tcpkit nmap"
    if ! command -v nmap >/dev/null; then
        log "bench: scan: nmap missing (scripts/deps.sh bench installs it)"
        FAILED=1
        TOOLS=tcpkit
    fi
    log "bench: scan: $TOTAL ports of 127.0.0.1 in a fresh namespace per run, $ROUNDS rounds;" \
        "listeners on $LISTEN"
    local round tool order
    for round in $(seq "$ROUNDS"); do
        order=$TOOLS
        [ $((round % 2)) = 1 ] || order=$(tr ' ' '\n' <<<"$TOOLS" | tac | tr '\n' ' ')
        for tool in $order; do
            log "bench: scan round $round/$ROUNDS -> $tool"
            scan_one "$tool" "$round"
        done
    done
}

[ "$TABLE_ONLY" = 1 ] || run_bench
[ -s "$RESULTS" ] || exit "$FAILED"

# The table: per scanner, the median wall time over the rounds, the spread
# (max - min) / median, ports per second at the median, and the median of the
# per-round ratios of tcpkit's ports per second to nmap's. Then the check:
# every run must have exited 0 and found exactly the listeners open and
# every other port closed, so both scanners agree.
echo
# shellcheck disable=SC2016 # awk code, not shell
awk -v want="$LISTEN" "$AWK_LIB"'
function list(k) { return match($0, "\"" k "\":\\[[^]]*\\]") ? substr($0, RSTART + length(k) + 4, RLENGTH - length(k) - 5) : "" }
BEGIN {
    gsub(/ /, ",", want)
    bad = 0
}
{
    s = str("server")
    if (!(s in n))
        keys[++nk] = s
    n[s]++
    secs[s, n[s]] = num("seconds")
    total = num("ports")
    sec_of[s, num("round")] = num("seconds")
    rounds[num("round")] = 1
    got = list("open")
    expect_closed = total - split(want, tmp, ",")
    if (num("exit") != 0 || got != want || num("closed") != expect_closed || num("filtered") != 0) {
        errs[s]++
        bad++
        printf "bench: scan round %d, %s: exit %d, open [%s], %d closed, %d filtered; expected open [%s], %d closed\n",
               num("round"), s, num("exit"), got, num("closed"), num("filtered"), want,
               expect_closed > "/dev/stderr"
    }
}
END {
    printf "%-10s %-7s %8s %6s %9s %6s %10s\n", "scenario", "scanner", "seconds", "spread",
           "ports/s", "errors", "vs nmap"
    for (j = 1; j <= nk; j++) {
        s = keys[j]
        split("", v)
        for (a = 1; a <= n[s]; a++)
            v[a] = secs[s, a]
        m = median(v, n[s])
        spread = m > 0 ? (v[n[s]] - v[1]) / m * 100 : 0
        # ports/s ratio within each round: nmap seconds / this scanner seconds.
        split("", r)
        nr = 0
        for (k in rounds)
            if (sec_of[s, k] > 0 && sec_of["nmap", k] > 0)
                r[++nr] = sec_of["nmap", k] / sec_of[s, k]
        printf "%-10s %-7s %8.3f %5.0f%% %9.0f %6d %10s\n", "full-range", s, m, spread,
               (m > 0 ? total / m : 0), errs[s], (nr > 0 ? sprintf("%.2f", median(r, nr)) : "-")
    }
    if (bad)
        printf "results: %d runs differ from the listeners opened (see above)\n", bad
    else
        printf "results: every run found exactly [%s] open, the other %d ports closed\n", want,
               total - split(want, tmp, ",")
    exit (bad > 0)
}' "$RESULTS" || FAILED=1
exit "$FAILED"
