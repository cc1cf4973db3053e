#!/usr/bin/env bash
# TURN relay benchmark on loopback (docs/performance.md, "TURN relay"): relayed messages/s and payload Mbit/s
# through our stund and through coturn, each pinned to core 0, the same turnload load on core 1, alternating
# (coturn ours coturn ours ...) for --rounds rounds. turnload keeps --window ChannelData messages in flight on
# each of --pairs client pairs, each message echoed back by the other client of its pair through two
# allocations. Prints a markdown table of every run and the medians. Every process started here is killed on
# exit. Needs coturn (turnserver) and root only for nothing; runs as any user.
#
# Usage: scripts/bench-turn.sh [--rounds N] [--duration S] [--warmup S] [--pairs N] [--window N] [--size B]
set -euo pipefail

ROUNDS=3
DURATION=5
WARMUP=1
PAIRS=8
WINDOW=32
SIZE=1000
PORT=${BENCH_PORT:-34880}

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        *) echo "bench-turn.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
command -v turnserver >/dev/null || { echo "bench-turn.sh: turnserver not found (Debian package coturn)" >&2; exit 1; }
cargo build --release -q -p stund -p turnload
LOGDIR=$(mktemp -d /tmp/bench-turn.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$LOGDIR"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

start_server() {
    case "$1" in
        ours)
            taskset -c 0 target/release/stund --primary 127.0.0.1 --port "$PORT" --no-tcp --threads 1 \
                --rate-limit 0 --stats-interval 0 --user alice:secret --allowed-peer-ip 127.0.0.1 \
                --relay-ports 41000-41999 --relay-bandwidth 0 --user-quota 100000 >"$LOGDIR/ours.log" 2>&1 &
            ;;
        coturn)
            # -m 1: one relay thread; loopback peers allowed as for ours.
            taskset -c 0 turnserver -n --no-cli --no-tls --no-dtls -L 127.0.0.1 -E 127.0.0.1 -p "$PORT" \
                --min-port 42000 --max-port 42999 --lt-cred-mech --user alice:secret -r holepunch \
                --allow-loopback-peers -m 1 --user-quota 0 --total-quota 0 --no-stdout-log \
                --log-file "$LOGDIR/coturn-turnserver.log" >"$LOGDIR/coturn.log" 2>&1 &
            ;;
    esac
    PID=$!
    sleep 1.5
}

stop_server() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; }

# CPU time (user + system, clock ticks) of process $1 and all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

declare -A RESULTS EFFICIENCY
echo "| round | server | relayed messages/s | payload Mbit/s | stalls | server CPU (cores) | messages per server CPU-second |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
    for s in coturn ours; do
        start_server "$s"
        before=$(cpu_ticks "$PID")
        t0=$(date +%s.%N)
        out=$(taskset -c 1 target/release/turnload --server "127.0.0.1:$PORT" --pairs "$PAIRS" --window "$WINDOW" \
            --size "$SIZE" --warmup "$WARMUP" --duration "$DURATION" --json)
        after=$(cpu_ticks "$PID")
        t1=$(date +%s.%N)
        stop_server
        msgs=$(echo "$out" | sed -E 's/.*"relayed_messages_per_s":([0-9]+).*/\1/')
        mbit=$(echo "$out" | sed -E 's/.*"payload_mbit_per_s":([0-9.]+).*/\1/')
        stalls=$(echo "$out" | sed -E 's/.*"stalls":([0-9]+).*/\1/')
        # The server's CPU over the whole load run (warm-up and set-up included, as the wall time is).
        cores=$(awk -v a="$after" -v b="$before" -v hz="$TICKS" -v t0="$t0" -v t1="$t1" \
            'BEGIN {printf "%.2f", (a - b) / hz / (t1 - t0)}')
        eff=$(awk -v m="$msgs" -v c="$cores" 'BEGIN {if (c > 0) printf "%.0f", m / c; else print 0}')
        echo "| $r | $s | $msgs | $mbit | $stalls | $cores | $eff |"
        RESULTS[$s]="${RESULTS[$s]:-} $msgs"
        EFFICIENCY[$s]="${EFFICIENCY[$s]:-} $eff"
        PORT=$((PORT + 1))
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(echo "${RESULTS[coturn]}" | median)
o=$(echo "${RESULTS[ours]}" | median)
echo
echo "median relayed messages/s: coturn $c, ours $o ($(awk -v o="$o" -v c="$c" 'BEGIN {printf "%.2f", o / c}')x coturn);" \
    "payload ${SIZE} bytes, $PAIRS pairs x $WINDOW in flight, ${DURATION} s per run"
ce=$(echo "${EFFICIENCY[coturn]}" | median)
oe=$(echo "${EFFICIENCY[ours]}" | median)
echo "median messages per server CPU-second: coturn $ce, ours $oe ($(awk -v o="$oe" -v c="$ce" 'BEGIN {printf "%.2f", o / c}')x coturn)"
