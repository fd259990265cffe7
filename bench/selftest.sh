#!/usr/bin/env bash
# Self-test of the benchmark tools: loadgen must pass against the honest
# ceiling server, and must fail, naming the problem, against each deliberate
# fault (ceiling --fault MODE) and against a server that goes away.
#
# Env: LOADGEN, CEILING (binaries to test), BENCH_PORT_BASE (ports are
# picked upwards from it), BENCH_NO_BUILD=1 (skip building; make did it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    make -s -f bench/bench.mk build/bench/loadgen build/bench/ceiling build/bench/ceiling_tls \
        build/bench/tls/cert.pem || exit 1
fi
LOADGEN=${LOADGEN:-build/bench/loadgen}
CEILING=${CEILING:-build/bench/ceiling}
CEILING_TLS=${CEILING_TLS:-build/bench/ceiling_tls}
TLS_FILES="build/bench/tls/cert.pem build/bench/tls/key.pem"
TMP=$(mktemp -d)
trap 'bench_cleanup; rm -rf "$TMP"' EXIT

passed=0
failed=0
pass() { echo "ok   - $1"; passed=$((passed + 1)); }
fail() {
    echo "FAIL - $1"
    failed=$((failed + 1))
    local f
    for f in "${@:2}"; do sed 's/^/       | /' "$f"; done
}

# Starts `ceiling ARGS... $PORT` on a free port and waits until it accepts.
start_ceiling() {
    bench_next_port
    start_server "$TMP/server.log" "$CEILING $* \$PORT"
    if ! wait_ready "$SERVER_PID" 10 bench_port_accepts "$PORT"; then
        echo "could not start: $CEILING $* $PORT" >&2
        cat "$TMP/server.log" >&2
        exit 1
    fi
}

# expect_ok NAME STDOUT_REGEX LOADGEN_ARGS...: loadgen against the honest
# ceiling exits 0 and prints a line matching STDOUT_REGEX.
expect_ok() {
    local name=$1 want=$2
    shift 2
    start_ceiling
    "$LOADGEN" --addr "127.0.0.1:$PORT" "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    stop_server "$SERVER_PID"
    if ((rc == 0)) && grep -Eq "$want" "$TMP/out"; then
        pass "$name: $(cat "$TMP/out")"
    else
        fail "$name (exit $rc)" "$TMP/out" "$TMP/err"
    fi
}

# expect_caught MODE STDERR_REGEX: loadgen against `ceiling --fault MODE`
# exits 1 and names the problem on stderr.
expect_caught() {
    local mode=$1 want=$2
    start_ceiling --fault "$mode"
    "$LOADGEN" --addr "127.0.0.1:$PORT" --conns 4 --window 4 --duration 3 \
        --warmup 0.1 >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    stop_server "$SERVER_PID"
    if ((rc == 1)) && grep -Eq "$want" "$TMP/err"; then
        pass "fault $mode caught: $(cat "$TMP/err")"
    else
        fail "fault $mode not caught as /$want/ (exit $rc)" "$TMP/out" "$TMP/err"
    fi
}

test_honest() {
    local line='errors=0$'
    expect_ok "1 conn, window 1, 64 B" "msgs=[1-9].*$line" \
        --conns 1 --window 1 --size 64 --duration 0.5 --warmup 0.1
    expect_ok "64 conns, window 16, 64 B" "msgs=[1-9].*$line" \
        --conns 64 --window 16 --size 64 --duration 0.5 --warmup 0.1
    expect_ok "16 conns, window 4, 16 KiB" "msgs=[1-9].*$line" \
        --conns 16 --window 4 --size 16384 --duration 0.5 --warmup 0.1
    expect_ok "2 conns, window 3, 1 MiB frames" "msgs=[1-9].*$line" \
        --conns 2 --window 3 --size 1048576 --duration 0.5 --warmup 0.1
    expect_ok "1000 conns, window 1" "msgs=[1-9].*$line" \
        --conns 1000 --window 1 --duration 0.5 --warmup 0.1
    expect_ok "2000 idle conns" '^idle_conns=2000 ok$' --idle 2000 --duration 0.5
}

test_unix_socket() {
    local sock=$TMP/ceiling.sock
    start_server "$TMP/server.log" "$CEILING unix:$sock"
    wait_ready "$SERVER_PID" 10 \
        "$LOADGEN" --addr "unix:$sock" --idle 1 --duration 0 >/dev/null 2>&1
    "$LOADGEN" --addr "unix:$sock" --conns 8 --window 8 --duration 0.5 \
        --warmup 0.1 >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    stop_server "$SERVER_PID"
    if ((rc == 0)) && grep -q 'errors=0$' "$TMP/out"; then
        pass "unix socket: $(cat "$TMP/out")"
    else
        fail "unix socket (exit $rc)" "$TMP/out" "$TMP/err"
    fi
}

test_faults() {
    expect_caught flip 'payload corrupted'
    expect_caught drop 'frame lost'
    expect_caught reorder 'frames reordered'
    expect_caught dup 'duplicate frame'
}

test_server_dies() {
    start_ceiling
    "$LOADGEN" --addr "127.0.0.1:$PORT" --conns 4 --window 4 --duration 5 \
        --warmup 0 >"$TMP/out" 2>"$TMP/err" &
    local lg=$!
    sleep 0.5
    local rc
    {   # braces: keep bash's "Killed" job notice out of the report
        kill -KILL "$SERVER_PID"
        wait "$lg"
        rc=$?
        stop_server "$SERVER_PID"
    } 2>/dev/null
    if ((rc == 1)) && grep -Eq 'server closed|reset' "$TMP/err"; then
        pass "server killed mid-run: $(cat "$TMP/err")"
    else
        fail "server killed mid-run not reported (exit $rc)" "$TMP/out" "$TMP/err"
    fi
}

test_connect_refused() {
    bench_next_port
    "$LOADGEN" --addr "127.0.0.1:$PORT" --conns 2 >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if ((rc == 1)) && grep -q 'refused' "$TMP/err"; then
        pass "no server: $(cat "$TMP/err")"
    else
        fail "no server not reported (exit $rc)" "$TMP/out" "$TMP/err"
    fi
}

# A header announcing 16 MiB + 1 bytes must make the ceiling hang up: read
# then sees EOF (status 1) rather than timing out (status > 128).
test_oversize_frame() {
    start_ceiling
    local rc
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    printf '\001\000\000\001' >&3
    read -r -t 5 -u 3 _
    rc=$?
    exec 3>&-
    stop_server "$SERVER_PID"
    if ((rc == 1)); then
        pass "oversize frame: connection closed"
    else
        fail "oversize frame: connection not closed (read status $rc)" "$TMP/server.log"
    fi
}

test_clean_exit() {
    start_ceiling
    if stop_server "$SERVER_PID"; then
        pass "ceiling exits 0 on SIGTERM"
    else
        fail "ceiling exit status $? on SIGTERM" "$TMP/server.log"
    fi
}

# The TLS tools: loadgen --tls passes against ceiling_tls (small frames,
# frames larger than its read buffer, full handshakes), and fails, naming
# the handshake, against a server that does not speak TLS.
test_tls() {
    local args
    for args in "--conns 64 --window 16 --size 64" "--conns 2 --window 3 --size 1048576" \
        "--handshakes --conns 8 --size 64"; do
        bench_next_port
        start_server "$TMP/server.log" "$CEILING_TLS \$PORT $TLS_FILES"
        wait_ready "$SERVER_PID" 10 bench_port_accepts "$PORT"
        # shellcheck disable=SC2086 # args holds several words on purpose
        "$LOADGEN" --addr "127.0.0.1:$PORT" --tls $args --duration 0.5 --warmup 0.1 >"$TMP/out" 2>"$TMP/err"
        local rc=$?
        stop_server "$SERVER_PID"
        if ((rc == 0)) && grep -Eq 'msgs=[1-9].*errors=0$' "$TMP/out"; then
            pass "tls $args: $(cat "$TMP/out")"
        else
            fail "tls $args (exit $rc)" "$TMP/out" "$TMP/err" "$TMP/server.log"
        fi
    done
    start_ceiling
    "$LOADGEN" --addr "127.0.0.1:$PORT" --tls --conns 1 --duration 0.5 >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    stop_server "$SERVER_PID"
    if ((rc == 1)) && grep -q 'TLS handshake failed' "$TMP/err"; then
        pass "tls against a plain server: $(cat "$TMP/err")"
    else
        fail "tls against a plain server not reported (exit $rc)" "$TMP/out" "$TMP/err"
    fi
}

test_honest
test_tls
test_unix_socket
test_faults
test_server_dies
test_connect_refused
test_oversize_frame
test_clean_exit

echo "$passed passed, $failed failed"
((failed == 0))
