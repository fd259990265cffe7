# shellcheck shell=bash
# Helpers shared by bench/selftest.sh and bench/run.sh (sourced, not run).
#
# Servers are started with start_server and stopped with stop_server; an EXIT
# trap calling bench_cleanup kills whatever is still running of the processes
# listed in BENCH_PIDS.

BENCH_PIDS=()
_bench_port=${BENCH_PORT_BASE:-$((20000 + $$ % 10000))}

# True while PID exists and is not a zombie (kill -0 succeeds on zombies).
bench_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
bench_port_accepts() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Sets PORT to a port nobody listens on. Ports stay below the kernel's
# ephemeral range so the load generator's own connections cannot take them.
bench_next_port() {
    while :; do
        _bench_port=$((_bench_port + 1))
        ((_bench_port < 32000)) || _bench_port=20000
        bench_port_accepts "$_bench_port" || break
    done
    PORT=$_bench_port
}

# start_server LOG CMD [PREFIX...]: runs the shell command CMD (which may use
# $PORT) with PREFIX (e.g. taskset -c 0) in front, output to LOG, and sets
# SERVER_PID. The command is exec'ed, so SERVER_PID is the server itself.
start_server() {
    local log=$1 cmd=$2
    shift 2
    PORT=$PORT "$@" sh -c "exec $cmd" >"$log" 2>&1 &
    SERVER_PID=$!
    BENCH_PIDS+=("$SERVER_PID")
}

# wait_ready PID TIMEOUT_S CHECK...: polls CHECK until it succeeds; fails if
# PID dies or the deadline passes first.
wait_ready() {
    local pid=$1 deadline=$((SECONDS + $2))
    shift 2
    until "$@"; do
        bench_alive "$pid" || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# Prints the server's memory field (VmHWM = peak RSS, VmRSS) in KiB.
server_mem_kib() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null
}

# server_cpu_ticks PID: user + system CPU time used so far by PID and its
# child processes (a server with --workers), in clock ticks.
server_cpu_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null |
        awk -v p="$1" '$1 == p || $4 == p { t += $14 + $15 } END { print t + 0 }'
}

# stop_server PID: SIGTERM, then SIGKILL after 5 s; returns the exit status.
stop_server() {
    local pid=$1 i status
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        bench_alive "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    # Braces: bash prints "Killed" job notices on the shell's stderr.
    { wait "$pid"; } 2>/dev/null
    status=$?
    bench_forget "$pid"
    return "$status"
}

# Removes PID from BENCH_PIDS once it has been waited for (the number may be
# reused by an unrelated process afterwards).
bench_forget() {
    local p kept=()
    for p in "${BENCH_PIDS[@]}"; do
        [[ $p == "$1" ]] || kept+=("$p")
    done
    BENCH_PIDS=("${kept[@]}")
}

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
        { wait "$pid"; } 2>/dev/null
    done
    BENCH_PIDS=()
}

# Makes INT/TERM run the EXIT trap (and so bench_cleanup) before dying.
trap 'exit 130' INT
trap 'exit 143' TERM
