#!/usr/bin/env bash
# STUN Binding benchmark on loopback (docs/performance.md explains the method and holds the figures).
#
# Each server runs pinned to core 0, the same stunload load runs on core 1, one after the other:
#   echo    the bare batched UDP echo loop (`stunload echo`): the ceiling of the rig
#   coturn  turnserver -S -m 1 (STUN only, one relay thread)
#   vovida  stund from Debian's stun-server package
#   ours    target/release/stund --threads 1 --rate-limit 0
# alternating with echo (echo coturn echo vovida echo ours echo ...), so each server's ratio to echo uses
# the echo runs right before and after it; then a scaling run (echo and ours with 1 and 2 threads, server
# and load sharing cores 0-1). Prints markdown tables: req/s, p50, p99, ratios to echo and coturn.
# Every server is checked to answer correctly (XOR-MAPPED-ADDRESS = our address) and to listen on
# loopback only before it is loaded, and every process started here is killed on exit.
#
# On a shared machine other work steals CPU from the rig; by default the servers and the load run in
# their own scheduler autogroup at nice -20 so they get the cores they are pinned to (--no-priority: off).
#
# Usage: scripts/bench.sh [--duration S] [--warmup S] [--rounds N] [--sockets N] [--inflight N]
#                         [--only "echo coturn vovida ours"] [--no-scaling] [--no-install] [--require-ours]
#                         [--no-priority] [--markdown FILE] [--logs DIR]
#        scripts/bench.sh --report DIR     (print the tables again from an earlier run's logs)
set -euo pipefail

DURATION=10
WARMUP=2
ROUNDS=3
SOCKETS=4
INFLIGHT=32
ONLY="echo coturn vovida ours"
SCALING=1
INSTALL=1
REQUIRE_OURS=0
PRIORITY=1
MARKDOWN=""
LOGDIR=""
REPORT=""
BASE_PORT=${BENCH_PORT:-34780}
# Before each measured run, wait (up to QUIET_WAIT s) until the machine is at least QUIET % idle.
# With the priority boost the rig outweighs other work anyway, so then the idle figure is only recorded.
QUIET=${QUIET:-90}
QUIET_WAIT=${QUIET_WAIT:-}

die() { echo "bench.sh: $*" >&2; exit 1; }
note() { echo "bench.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --sockets) SOCKETS=$2; shift 2 ;;
        --inflight) INFLIGHT=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --no-scaling) SCALING=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        --require-ours) REQUIRE_OURS=1; shift ;;
        --no-priority) PRIORITY=0; shift ;;
        --markdown) MARKDOWN=$2; shift 2 ;;
        --logs) LOGDIR=$2; shift 2 ;;
        --report) REPORT=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
if [ -z "$QUIET_WAIT" ]; then
    if [ "$PRIORITY" = 1 ]; then QUIET_WAIT=0; else QUIET_WAIT=30; fi
fi

# ---- processes we start, killed on any exit ---------------------------------------------------------
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# ---- helpers ----------------------------------------------------------------------------------------
# boosted CMD...: runs CMD in a new session (setsid does not fork: a script's child is never a process
# group leader), whose autogroup gets nice -20 and so outweighs every other session on the machine.
boosted() {
    if [ "$PRIORITY" = 1 ]; then
        setsid bash -c 'echo -20 >/proc/self/autogroup && exec "$@"' boosted "$@"
    else
        "$@"
    fi
}

SERVER_PID=""
# start_server NAME CPUS CMD...: runs CMD pinned to CPUS, output to $LOGDIR/NAME.log.
start_server() {
    local name=$1 cpus=$2
    shift 2
    echo "+ taskset -c $cpus $*" >"$LOGDIR/$name.log"
    # Not via the boosted function: a function in the background is a subshell and $! would be its PID.
    if [ "$PRIORITY" = 1 ]; then
        setsid bash -c 'echo -20 >/proc/self/autogroup && exec "$@"' boosted taskset -c "$cpus" "$@" >>"$LOGDIR/$name.log" 2>&1 &
    else
        taskset -c "$cpus" "$@" >>"$LOGDIR/$name.log" 2>&1 &
    fi
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$SERVER_PID" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
    SERVER_PID=""
}

# wait_ready NAME PORT FLAGS: polls with single requests until the server answers correctly (5 s at most).
wait_ready() {
    local name=$1 port=$2 flags=$3 i
    for i in $(seq 1 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || { note "$name exited; its log:"; tail -n 20 "$LOGDIR/$name.log" >&2; return 1; }
        # shellcheck disable=SC2086
        if "$LOAD" --target "127.0.0.1:$port" --sockets 1 --inflight 1 --warmup 0 --duration 0.3 --count 3 \
            --timeout 50 $flags >>"$LOGDIR/$name.ready.log" 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    note "$name does not answer on 127.0.0.1:$port (see $LOGDIR/$name.ready.log and $LOGDIR/$name.log)"
    return 1
}

# Refuses to load a server that listens anywhere but loopback.
loopback_only() {
    local name=$1 addrs bad
    addrs=$( (ss -H -lnup; ss -H -lntp) 2>/dev/null | grep -F "pid=$SERVER_PID," | awk '{print $4}')
    [ -n "$addrs" ] || { note "cannot see the sockets of $name (pid $SERVER_PID) with ss"; return 1; }
    bad=$(grep -vE '^(127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]):[0-9]+$' <<<"$addrs" || true)
    [ -z "$bad" ] || { note "$name listens outside loopback: $bad"; return 1; }
    echo "$name listens on: $(tr '\n' ' ' <<<"$addrs")" >>"$LOGDIR/$name.log.listen"
}

# Idle percentage of the whole machine over one second.
idle_pct() {
    local a b
    read -r -a a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -r -a b < <(grep '^cpu ' /proc/stat)
    local t0=0 t1=0 i
    for i in 1 2 3 4 5 6 7 8; do t0=$((t0 + a[i])); t1=$((t1 + b[i])); done
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=$((t1 - t0))
    [ "$total" -gt 0 ] || { echo 100; return; }
    echo $((100 * idle / total))
}

wait_quiet() {
    local start=$SECONDS idle
    while :; do
        idle=$(idle_pct)
        if [ "$idle" -ge "$QUIET" ] || [ $((SECONDS - start)) -ge "$QUIET_WAIT" ]; then
            [ "$idle" -ge "$QUIET" ] || [ "$QUIET_WAIT" = 0 ] ||
                note "machine only ${idle}% idle after ${QUIET_WAIT}s of waiting; measuring anyway"
            echo "$idle"
            return
        fi
    done
}

jget() { sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1"; }

# CPU time (user + system, all threads) the server has used so far, in clock ticks.
server_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0; }

# measure SECTION LABEL ROUND PORT LOADCPUS FLAGS: one measured load run, appended to $RESULTS.
measure() {
    local section=$1 label=$2 round=$3 port=$4 cpus=$5 flags=$6 idle out t0 t1 w0 w1 cpu bad
    idle=$(wait_quiet)
    t0=$(server_ticks)
    w0=$(date +%s%N)
    # shellcheck disable=SC2086
    out=$(boosted taskset -c "$cpus" "$LOAD" --target "127.0.0.1:$port" --warmup "$WARMUP" --duration "$DURATION" \
        --json $flags 2>>"$LOGDIR/$label.load.log") || { note "load against $label failed: $(tail -n1 "$LOGDIR/$label.load.log")"; return 1; }
    t1=$(server_ticks)
    w1=$(date +%s%N)
    # Cores the server kept busy over the whole load run (warm-up included).
    cpu=$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v ns="$((w1 - w0))" 'BEGIN { printf "%.2f", t / hz / (ns / 1e9) }')
    echo "$out" >>"$LOGDIR/$label.load.json"
    # Answers that were not right: malformed, wrong XOR-MAPPED-ADDRESS (--check), error responses.
    bad=$(($(jget "$out" invalid) + $(jget "$out" check_failed) + $(jget "$out" error_responses)))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$label" "$round" "$(jget "$out" rps)" \
        "$(jget "$out" p50_us)" "$(jget "$out" p99_us)" "$cpu" "$(jget "$out" p999_us)" "$(jget "$out" timeouts)" "$idle" \
        "$bad" >>"$RESULTS"
    printf '  %-8s round %s: %8s req/s  p50 %6s us  p99 %7s us  server CPU %s cores  timeouts %s  wrong %s  (idle before: %s%%)\n' \
        "$label" "$round" "$(jget "$out" rps)" "$(jget "$out" p50_us)" "$(jget "$out" p99_us)" "$cpu" "$(jget "$out" timeouts)" \
        "$bad" "$idle" >&2
}

# Each label has its own port pair, so a server that lingers cannot answer for the next one.
port_of() {
    local i=0 l
    for l in echo coturn vovida ours echo-t1 echo-t2 ours-t1 ours-t2; do
        [ "$l" = "$1" ] && { echo $((BASE_PORT + 2 * i)); return; }
        i=$((i + 1))
    done
    die "no port for $1"
}

# server_cmd NAME PORT THREADS: the command line that starts server NAME on PORT.
server_cmd() {
    local name=$1 port=$2 threads=$3
    case "$name" in
        echo) echo "$LOAD echo --bind 127.0.0.1:$port --threads $threads --max-time 600" ;;
        coturn) echo "$TURNSERVER -n -S --no-cli -L 127.0.0.1 -p $port -m 1 --no-tls --no-dtls --log-file stdout" ;;
        vovida) echo "$VOVIDA -h 127.0.0.1 -a 127.0.0.2 -p $port -o $((port + 1))" ;;
        # --rate-limit 0: all load comes from one source IP, which the default per-IP limit would throttle.
        ours) echo "$OURS --primary 127.0.0.1 --port $port --threads $threads --rate-limit 0" ;;
    esac
}

available() {
    case "$1" in
        echo) return 0 ;;
        coturn) [ -n "$TURNSERVER" ] || { note "turnserver not found: coturn skipped"; return 1; } ;;
        vovida) [ -n "$VOVIDA" ] && [ -x "$VOVIDA" ] || { note "Vovida stund not found: skipped"; return 1; } ;;
        ours) [ "$OURS_OK" = 1 ] || return 1 ;;
    esac
}

# run_one SECTION LABEL NAME PORT THREADS SERVERCPUS LOADCPUS LOADFLAGS
run_one() {
    local section=$1 label=$2 name=$3 port=$4 threads=$5 scpus=$6 lcpus=$7 lflags=$8 ready=--check
    [ "$name" = echo ] && ready=--accept-echo
    # shellcheck disable=SC2046
    start_server "$label" "$scpus" $(server_cmd "$name" "$port" "$threads")
    if wait_ready "$label" "$port" "$ready" && loopback_only "$label"; then
        measure "$section" "$label" "$round" "$port" "$lcpus" "$ready $lflags" || true
    else
        [ "$name" = ours ] && OURS_OK=0
    fi
    stop_server
}

# ---- the table --------------------------------------------------------------------------------------
# Medians over rounds per label: rps, p50, p99, server CPU.
medians() {
    awk -F'\t' -v s="$1" '$1 == s { print $2 }' "$RESULTS" | awk '!seen[$0]++' | while read -r label; do
        local m=()
        for cf in 4:%.0f 5:%.1f 6:%.1f 7:%.2f; do
            m+=("$(awk -F'\t' -v s="$1" -v l="$label" -v c="${cf%%:*}" '$1 == s && $2 == l { print $c }' "$RESULTS" |
                median "${cf#*:}")")
        done
        printf '%s\t%s\t%s\t%s\t%s\n' "$label" "${m[@]}"
    done
}
# median VALUES...: the median of the numbers on standard input, or n/a.
median() {
    sort -g | awk -v f="${1:-%.2f}" '{ v[NR] = $1 } END { if (NR == 0) printf "n/a"; else if (NR % 2) printf f, v[(NR + 1) / 2];
                                                        else printf f, (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# bratio SECTION LABEL REF: median over the runs of LABEL of its req/s divided by the mean req/s of the REF
# runs just before and just after it (in time, within SECTION): the echo runs that bracket it.
bratio() {
    awk -F'\t' -v s="$1" -v l="$2" -v r="$3" '
        $1 == s { n++; lab[n] = $2; rps[n] = $4 }
        END {
            for (i = 1; i <= n; i++) {
                if (lab[i] != l) continue
                sum = 0; k = 0
                for (j = i - 1; j >= 1; j--) if (lab[j] == r) { sum += rps[j]; k++; break }
                for (j = i + 1; j <= n; j++) if (lab[j] == r) { sum += rps[j]; k++; break }
                if (k > 0 && sum > 0) print rps[i] / (sum / k)
            }
        }' "$RESULTS" | median
}
# rratio SECTION LABEL REF: median over rounds of req/s(LABEL) / mean req/s(REF) of the same round.
rratio() {
    awk -F'\t' -v s="$1" -v l="$2" -v r="$3" '
        $1 == s && $2 == l { a[$3] += $4; na[$3]++ }
        $1 == s && $2 == r { b[$3] += $4; nb[$3]++ }
        END { for (k in a) if (k in b && b[k] > 0) print (a[k] / na[k]) / (b[k] / nb[k]) }' "$RESULTS" | median
}
# xratio A B: A / B for two numbers, or n/a.
xratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "n/a" }'; }

port_free() { [ -z "$(ss -H -lnu "sport = :$1" 2>/dev/null)" ] && [ -z "$(ss -H -lnt "sport = :$1" 2>/dev/null)" ]; }

render() {
    MED=$(medians main)
    local coturn_x
    coturn_x=$(bratio main coturn echo)
    {
        echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
        echo "Load: stunload $LOADFLAGS on core 1, server on core 0; ${WARMUP} s warm-up + ${DURATION} s per run; $ROUNDS round(s); priority boost: $([ "$PRIORITY" = 1 ] && echo on || echo off)"
        echo "(req/s, latency, server CPU: medians over runs; x echo: median over runs of req/s / mean of the echo runs just"
        echo " before and after; x coturn: x echo of the server / x echo of coturn)"
        echo
        echo "| server | req/s | p50 (us) | p99 (us) | x echo | x coturn | server CPU (cores) |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        while IFS=$'\t' read -r label rps p50 p99 cpu; do
            [ -n "$label" ] || continue
            local x
            if [ "$label" = echo ]; then x=1.00; else x=$(bratio main "$label" echo); fi
            printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "$label" "$rps" "$p50" "$p99" "$x" "$(xratio "$x" "$coturn_x")" "$cpu"
        done <<<"$MED"
        if [ "$SCALING" = 1 ]; then
            SMED=$(medians scaling)
            echo
            echo "Scaling: server and load (stunload $SCALEFLAGS) both on cores 0-1; $ROUNDS round(s)"
            echo "(x 1 thread: runs of the same round; x echo: bracketed by the echo runs with the same threads)"
            echo
            echo "| server | threads | req/s | p50 (us) | p99 (us) | x same server, 1 thread | x echo, same threads | server CPU (cores) | server CPU us/req |"
            echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            while IFS=$'\t' read -r label rps p50 p99 cpu; do
                [ -n "$label" ] || continue
                name=${label%-t*}
                t=${label##*-t}
                printf '| %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n' "$name" "$t" "$rps" "$p50" "$p99" \
                    "$(rratio scaling "$label" "$name-t1")" "$(if [ "$name" = echo ]; then echo 1.00; else bratio scaling "$label" "echo-t$t"; fi)" "$cpu" "$(awk -v c="$cpu" -v r="$rps" 'BEGIN { if (r > 0) printf "%.2f", c * 1e6 / r; else printf "n/a" }')"
            done <<<"$SMED"
        fi
        awk -F'\t' '{ lost += $9; wrong += $11 } END {
            printf "\nAll runs: %d requests lost (timed out and re-sent), %d wrong answers (malformed, wrong mapped address, error).\n", lost, wrong }' "$RESULTS"
    }
}

# ---- the runs ---------------------------------------------------------------------------------------
run_all() {
    if [ "$PRIORITY" = 1 ] && [ ! -w /proc/self/autogroup ]; then
        note "no writable /proc/self/autogroup (kernel without autogroup, or not root): running without priority"
        PRIORITY=0
    fi

    # What we need: Debian packages for the third-party servers, and our binaries.
    apt_install() {
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q "$@" >"$LOGDIR/apt.log" 2>&1 ||
            { apt-get update -q >>"$LOGDIR/apt.log" 2>&1 && apt-get install -y -q "$@" >>"$LOGDIR/apt.log" 2>&1; } ||
            die "apt-get install $* failed (see $LOGDIR/apt.log)"
    }
    if [ "$INSTALL" = 1 ]; then
        pkgs=()
        command -v turnserver >/dev/null || pkgs+=(coturn)
        dpkg -s stun-server >/dev/null 2>&1 || pkgs+=(stun-server)
        command -v taskset >/dev/null || pkgs+=(util-linux)
        command -v ss >/dev/null || pkgs+=(iproute2)
        if [ ${#pkgs[@]} -gt 0 ]; then note "installing ${pkgs[*]}"; apt_install "${pkgs[@]}"; fi
    fi
    TURNSERVER=$(command -v turnserver || true)
    # Vovida's binary is also called stund: always by absolute path, never via PATH.
    VOVIDA=$(dpkg -L stun-server 2>/dev/null | grep -E '/s?bin/stund$' | head -n1 || true)

    cargo build --release -q -p stunload || die "cargo build -p stunload failed"
    for off in 0 2 4 6 8 10 12 14 16 18; do
        port_free $((BASE_PORT + off)) && port_free $((BASE_PORT + off + 1)) ||
            die "port $((BASE_PORT + off)) or $((BASE_PORT + off + 1)) is in use; set BENCH_PORT to another base"
    done
    LOAD=$PWD/target/release/stunload
    OURS=$PWD/target/release/stund
    OURS_OK=1
    if [[ " $ONLY " == *" ours "* ]] || [ "$SCALING" = 1 ]; then
        if ! cargo build --release -q -p stund 2>"$LOGDIR/stund-build.log"; then
            OURS_OK=0
            note "cargo build --release -p stund failed (see $LOGDIR/stund-build.log): our stund is skipped"
        fi
    fi

    LOADFLAGS="--sockets $SOCKETS --inflight $INFLIGHT"
    # Scaling: 2 load threads, 8 sockets x 16 so SO_REUSEPORT's flow hash has enough flows to spread.
    SCALEFLAGS="--threads 2 --sockets 8 --inflight 16"
    # What `--report` needs to print the tables again.
    cat >"$LOGDIR/meta.env" <<META
WARMUP=$WARMUP
DURATION=$DURATION
ROUNDS=$ROUNDS
LOADFLAGS="$LOADFLAGS"
SCALEFLAGS="$SCALEFLAGS"
SCALING=$SCALING
PRIORITY=$PRIORITY
META
    note "logs in $LOGDIR; $ROUNDS round(s) of ${WARMUP}s warm-up + ${DURATION}s per server"
    # Runs alternate with the echo ceiling (E C E V E O E ...) so that every server is compared with the
    # echo runs just before and after it: the machine drifts over minutes, much less over seconds.
    local others=() name t
    for name in $ONLY; do [ "$name" = echo ] || others+=("$name"); done
    [[ " $ONLY " == *" echo "* ]] || note "echo not in --only: no ratios to echo"
    for round in $(seq 1 "$ROUNDS"); do
        note "round $round: one server on core 0, load ($LOADFLAGS) on core 1"
        if [[ " $ONLY " == *" echo "* ]] && { [ "$round" = 1 ] || [ ${#others[@]} = 0 ]; }; then
            run_one main echo echo "$(port_of echo)" 1 0 1 "$LOADFLAGS"
        fi
        for name in "${others[@]}"; do
            available "$name" || continue
            run_one main "$name" "$name" "$(port_of "$name")" 1 0 1 "$LOADFLAGS"
            [[ " $ONLY " == *" echo "* ]] && run_one main echo echo "$(port_of echo)" 1 0 1 "$LOADFLAGS"
        done
        if [ "$SCALING" = 1 ]; then
            note "round $round: scaling, server and load ($SCALEFLAGS) sharing cores 0-1"
            for t in 1 2; do
                run_one scaling "echo-t$t" echo "$(port_of "echo-t$t")" "$t" 0-1 0-1 "$SCALEFLAGS"
                if available ours; then
                    run_one scaling "ours-t$t" ours "$(port_of "ours-t$t")" "$t" 0-1 0-1 "$SCALEFLAGS"
                    run_one scaling "echo-t$t" echo "$(port_of "echo-t$t")" "$t" 0-1 0-1 "$SCALEFLAGS"
                fi
            done
        fi
    done
    [ "$REQUIRE_OURS" = 0 ] || [ "$OURS_OK" = 1 ] || die "our stund could not be measured"
}

# ---- main: a function, so that bash has parsed all of it before anything runs -------------------------
main() {
    # Paths given on the command line are relative to where we were started, not to the repository.
    [ -z "$REPORT" ] || REPORT=$(realpath -m "$REPORT")
    [ -z "$LOGDIR" ] || LOGDIR=$(realpath -m "$LOGDIR")
    [ -z "$MARKDOWN" ] || MARKDOWN=$(realpath -m "$MARKDOWN")
    cd "$(dirname "$0")/.."
    if [ -n "$REPORT" ]; then
        [ -f "$REPORT/results.tsv" ] && [ -f "$REPORT/meta.env" ] || die "$REPORT holds no results.tsv/meta.env"
        RESULTS=$REPORT/results.tsv
        # shellcheck disable=SC1091
        . "$REPORT/meta.env"
        render
        return
    fi
    [ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (server on core 0, load on core 1); this machine has $(nproc)"
    LOGDIR=${LOGDIR:-$(mktemp -d /tmp/stunbench.XXXXXX)}
    mkdir -p "$LOGDIR"
    RESULTS=$LOGDIR/results.tsv
    : >"$RESULTS"

    run_all
    render | tee "${MARKDOWN:-/dev/null}"
    note "raw results: $RESULTS"
}

main
