# shellcheck shell=bash disable=SC2034,SC2004 # the arrays are the caller's (associative)
# Shared by bench/run.sh and bench/balance.sh (sourced; both run from the
# repository root with `set -euo pipefail`, an associative PID, DRAIN and
# PORT, READY_TIMEOUT and log()).

# wait_listening NAME FIFO LOG: call right after starting a server in the
# background with its output going to FIFO. Records its PID, reads the FIFO
# for the server's "listening on [HOST:]PORT" line (READY_TIMEOUT seconds at
# most), passes the rest of the output on to LOG from a background cat, and
# sets PORT[NAME]. Returns 1 if no such line came.
wait_listening() {
    local name=$1 fifo=$2 logf=$3 line="" fd port="" t0=$SECONDS
    PID[$name]=$!
    exec {fd}<"$fifo"
    while [ $((SECONDS - t0)) -lt "$READY_TIMEOUT" ]; do
        IFS= read -r -t "$READY_TIMEOUT" -u "$fd" line || break
        if [[ $line =~ listening\ on\ ([^\ ]*:)?([0-9]+) ]]; then
            port=${BASH_REMATCH[2]}
            break
        fi
        printf '%s\n' "$line" >>"$logf"
    done
    cat <&"$fd" >>"$logf" &
    DRAIN[$name]=$!
    exec {fd}<&-
    rm -f "$fifo"
    if [ -z "$port" ]; then
        log "bench: $name did not report a listening address (see $logf)"
        return 1
    fi
    PORT[$name]=$port
}

# stop_pid NAME: ends the server PID[NAME] (TERM, up to 5 s, then KILL),
# reaps it, ends the cat that copies its output, and forgets both.
stop_pid() {
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

# Awk helpers for the tables: str(k) and num(k) pull a string or a number
# for key k out of a JSON line ($0), median(arr, n) sorts arr[1..n] and
# returns its median.
# shellcheck disable=SC2016 # awk code, not shell
AWK_LIB='
function str(k) { return match($0, "\"" k "\":\"[^\"]*\"") ? substr($0, RSTART + length(k) + 4, RLENGTH - length(k) - 5) : "" }
function num(k) { return match($0, "\"" k "\":-?[0-9.]+") ? substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3) + 0 : 0 }
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
