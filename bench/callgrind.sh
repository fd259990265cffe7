#!/usr/bin/env bash
# Instructions per echoed message, counted by callgrind: stable where
# wall-clock rates are not (a shared, noisy machine).
#
# usage: bench/callgrind.sh [SCENARIO ...]     (default: A B C D E)
#   Starts SERVER (default: build/luacomm examples/echo.lua $PORT) under
#   valgrind --tool=callgrind, warms it up with one short loadgen run,
#   zeroes the counters, drives a fixed amount of work (loadgen --count),
#   dumps, and prints per scenario:
#     callgrind scen=C msgs=N ir=TOTAL ir_per_msg=X
#   Env: SERVER, COUNT (messages per connection, default per scenario),
#   KEEP=DIR (keep the callgrind.out files there for callgrind_annotate).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh

SERVER=${SERVER:-'build/luacomm examples/echo.lua $PORT'}
LOADGEN=build/bench/loadgen
declare -A ARGS=(
    [A]="--conns 1 --window 1 --size 64"
    [B]="--conns 64 --window 1 --size 64"
    [C]="--conns 64 --window 16 --size 64"
    [D]="--conns 16 --window 4 --size 16384"
    [E]="--conns 1000 --window 1 --size 64"
)
declare -A DEFAULT_COUNT=([A]=20000 [B]=500 [C]=2000 [D]=1000 [E]=40)
TMP=$(mktemp -d)
trap 'bench_cleanup; rm -rf "$TMP"' EXIT
ulimit -n "$(ulimit -Hn)"

# Sum of the "summary:" / "totals:" Ir line of a callgrind output file.
total_ir() {
    awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

one() {
    local scen=$1 count=${COUNT:-${DEFAULT_COUNT[$1]}} out ir msgs
    out=$TMP/callgrind.out.$scen
    bench_next_port
    start_server "$TMP/server.log" \
        "valgrind -q --tool=callgrind --callgrind-out-file=$out.%p $SERVER"
    wait_ready "$SERVER_PID" 60 bench_port_accepts "$PORT" ||
        { echo "callgrind.sh: server did not start" >&2; cat "$TMP/server.log" >&2; return 1; }
    # shellcheck disable=SC2086 # ARGS holds several words on purpose
    "$LOADGEN" --addr "127.0.0.1:$PORT" ${ARGS[$scen]} --count 2 >/dev/null || return 1
    callgrind_control -z "$SERVER_PID" &>/dev/null
    # shellcheck disable=SC2086
    "$LOADGEN" --addr "127.0.0.1:$PORT" ${ARGS[$scen]} --count "$count" >"$TMP/lg.out" || return 1
    callgrind_control -d "$SERVER_PID" &>/dev/null
    stop_server "$SERVER_PID"
    msgs=$(sed -n 's/^count_msgs=\([0-9]*\) ok$/\1/p' "$TMP/lg.out")
    # The dump after zeroing is the file with the highest part number.
    local f
    f=$(ls -v "$out".*.* 2>/dev/null | tail -n 1)
    ir=$(total_ir "$f")
    [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$f" "$KEEP/callgrind.out.$scen"
    awk -v s="$scen" -v m="$msgs" -v i="$ir" \
        'BEGIN { printf "callgrind scen=%s msgs=%d ir=%d ir_per_msg=%.0f\n", s, m, i, i / m }'
}

for scen in "${@:-A B C D E}"; do
    # shellcheck disable=SC2086 # the default list splits on purpose
    for s in $scen; do one "$s"; done
done
