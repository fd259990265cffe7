#!/usr/bin/env bash
# Benchmarks echo servers against the libevent "ceiling" and writes a
# markdown report.
#
# usage: bench/run.sh ['NAME=COMMAND' ...]
#   Each COMMAND starts an echo server listening on 127.0.0.1:$PORT (quote the
#   $PORT; it is set per run) and must exec the server, so that its PID is the
#   server's (RSS is read from /proc/PID). Without arguments, SERVERS is used:
#   NAME=COMMAND entries separated by newlines or ';'. Ratios are relative to
#   the server named "ceiling" (or the first one listed); when a server named
#   "floor" is listed, a second column gives the ratio to it.
#
# Env: R runs per scenario (3), D measured seconds (5), WARMUP seconds (1),
#   QUICK=1 (1 run of 1 s), IDLE_CONNS (10000; 0 skips the idle test),
#   IDLE_HOLD seconds (3), OUT report file (bench/RESULTS.md),
#   BENCH_PORT_BASE, BENCH_NO_BUILD=1, BENCH_SCENARIOS (e.g. "B E"),
#   BENCH_NO_PIN=1 (no CPU pinning),
#   SKIP="NAME:WHAT:why ..." runs left out, WHAT a scenario letter or "idle",
#   with why (printed in the report; use _ for spaces): for a server that
#   cannot hold that many connections; for a second section (TLS):
#   LOADGEN_EXTRA (e.g. --tls), TITLE, and APPEND=1 to add the report to
#   OUT instead of replacing it.
#
# Every run starts a fresh server; runs are interleaved (ceiling, other,
# ceiling, other, ...) so drift hits all servers alike; the table shows
# medians over the runs. With 2+ CPUs the server is pinned to CPU 0 and the
# load generator to CPU 1.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh

if [[ -n ${QUICK:-} && ${QUICK:-} != 0 ]]; then
    R=${R:-1} D=${D:-1} WARMUP=${WARMUP:-0.3} IDLE_HOLD=${IDLE_HOLD:-1}
fi
R=${R:-3} D=${D:-5} WARMUP=${WARMUP:-1} IDLE_HOLD=${IDLE_HOLD:-3}
IDLE_CONNS=${IDLE_CONNS:-10000}
OUT=${OUT:-bench/RESULTS.md}
LOADGEN=build/bench/loadgen

# BENCH_SCENARIOS="B E" runs some only.
read -ra SCENARIOS <<<"${BENCH_SCENARIOS:-A B C D E}"
LOADGEN_EXTRA=${LOADGEN_EXTRA:-}
declare -A SCEN_DESC=(
    [A]="1 conn, window 1, 64 B"
    [B]="64 conns, window 1, 64 B"
    [C]="64 conns, window 16, 64 B"
    [D]="16 conns, window 4, 16 KiB"
    [E]="1000 conns, window 1, 64 B"
    [H]="new connections: 16 at a time, full TLS handshake + one 64 B echo each (msgs/s = handshakes/s)"
)
declare -A SCEN_ARGS=(
    [A]="--conns 1 --window 1 --size 64"
    [B]="--conns 64 --window 1 --size 64"
    [C]="--conns 64 --window 16 --size 64"
    [D]="--conns 16 --window 4 --size 16384"
    [E]="--conns 1000 --window 1 --size 64"
    [H]="--handshakes --conns 16 --size 64"
)

NAMES=()
declare -A CMDS=()
FAILURES=0

log() { echo "run.sh: $*" >&2; }

parse_servers() {
    local entries=() entry name
    if (($# > 0)); then
        entries=("$@")
    else
        IFS=$'\n;' read -r -d '' -a entries \
            <<<"${SERVERS:-ceiling=build/bench/ceiling \$PORT}"
    fi
    for entry in "${entries[@]}"; do
        entry=$(sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$entry")
        [[ -z $entry ]] && continue
        name=${entry%%=*}
        if [[ $entry != *=* || ! $name =~ ^[A-Za-z0-9_.-]+$ || -n ${CMDS[$name]+set} ]]; then
            log "bad or duplicate server entry '$entry' (want NAME=COMMAND," \
                "NAME of letters, digits, _ . -)"
            exit 2
        fi
        NAMES+=("$name")
        CMDS[$name]=${entry#*=}
    done
    ((${#NAMES[@]} > 0)) || { log "no servers given"; exit 2; }
    BASE=${NAMES[0]}
    [[ -n ${CMDS[ceiling]+set} ]] && BASE=ceiling
    FLOOR=
    [[ -n ${CMDS[floor]+set} && $BASE != floor ]] && FLOOR=floor
}

setup_pinning() {
    SERVER_PIN=() LOADGEN_PIN=()
    PINNING="none (fewer than 2 CPUs or no taskset)"
    # BENCH_NO_PIN=1: a server of several processes (--workers) needs every CPU
    if [[ -n ${BENCH_NO_PIN:-} ]]; then
        PINNING="none (BENCH_NO_PIN)"
    elif (($(nproc) >= 2)) && command -v taskset >/dev/null; then
        SERVER_PIN=(taskset -c 0) LOADGEN_PIN=(taskset -c 1)
        PINNING="server on CPU 0, loadgen on CPU 1"
    fi
}

# Starts server NAME on a fresh port; sets SERVER_PID and PORT. Logs to $1.
launch() {
    local name=$1 logf=$2
    bench_next_port
    start_server "$logf" "${CMDS[$name]}" "${SERVER_PIN[@]}"
    if ! wait_ready "$SERVER_PID" 20 bench_port_accepts "$PORT"; then
        log "$name did not accept on port $PORT; its output:"
        tail -n 20 "$logf" >&2
        stop_server "$SERVER_PID"
        return 1
    fi
}

# One measured run; appends "msgs_per_s p50 p99 hwm_kib cpu_us_per_msg" to
# $TMP/res.S.NAME. The server's CPU time per message (over warm-up and
# measurement, at the measured rate) stays meaningful when other processes
# share the machine and throughput does not.
run_one() {
    local scen=$1 name=$2 run=$3 f=$TMP/$1.$2.$3 hwm line cpu0 cpu1 mps
    log "[$scen run $run/$R] $name ..."
    launch "$name" "$f.server" || { FAILURES=$((FAILURES + 1)); return; }
    cpu0=$(server_cpu_ticks "$SERVER_PID")
    # shellcheck disable=SC2086 # SCEN_ARGS holds several words on purpose
    if "${LOADGEN_PIN[@]}" "$LOADGEN" --addr "127.0.0.1:$PORT" ${SCEN_ARGS[$scen]} $LOADGEN_EXTRA \
        --duration "$D" --warmup "$WARMUP" >"$f.out" 2>"$f.err"; then
        hwm=$(server_mem_kib "$SERVER_PID" VmHWM)
        cpu1=$(server_cpu_ticks "$SERVER_PID")
        line=$(cat "$f.out")
        mps=$(field msgs_per_s "$line")
        log "    $line"
        echo "$mps $(field p50_us "$line")" \
            "$(field p99_us "$line") ${hwm:-0}" \
            "$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v m="$mps" -v s="$D" -v w="$WARMUP" \
                'BEGIN { if (m > 0) printf "%.3f", t * 1e6 / hz / (m * (s + w)); else print "-" }')" \
            >>"$TMP/res.$scen.$name"
    else
        log "    loadgen failed against $name: $(cat "$f.err")"
        FAILURES=$((FAILURES + 1))
    fi
    stop_server "$SERVER_PID" || log "    $name exited with status $? on SIGTERM"
}

# field KEY LINE: the value of KEY=value in a loadgen output line.
field() {
    tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'
}

# median COLUMN FILE (1-based column), or max with "max" as third argument.
column_stat() {
    [[ -s $2 ]] || { echo "-"; return; }
    awk -v c="$1" '{ print $c }' "$2" | sort -g | awk -v how="${3:-median}" '
        { v[NR] = $1 }
        END {
            if (how == "max") x = v[NR]
            else if (NR % 2) x = v[(NR + 1) / 2]
            else x = (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.10g\n", x
        }'
}

# Idle test: RSS of a fresh server before and while IDLE_CONNS connections
# (each verified with one echo) are held open, "before with" into
# $TMP/idle.res.NAME.
idle_one() {
    local name=$1 f=$TMP/idle.$1 base rss='' lg
    log "[idle] $name with $IDLE_CONNS connections ..."
    launch "$name" "$f.server" || { FAILURES=$((FAILURES + 1)); return; }
    base=$(server_mem_kib "$SERVER_PID" VmRSS)
    "${LOADGEN_PIN[@]}" "$LOADGEN" --addr "127.0.0.1:$PORT" --idle "$IDLE_CONNS" \
        --duration "$IDLE_HOLD" >"$f.out" 2>"$f.err" &
    lg=$!
    BENCH_PIDS+=("$lg")
    # loadgen says "holding idle" once every connection has echoed once.
    if wait_ready "$lg" 120 grep -q 'holding idle' "$f.err"; then
        rss=$(server_mem_kib "$SERVER_PID" VmRSS)
    fi
    wait "$lg"
    local rc=$?
    bench_forget "$lg"
    if ((rc == 0)) && [[ -n $rss ]] && grep -q "^idle_conns=$IDLE_CONNS ok$" "$f.out"; then
        echo "$base $rss" >"$TMP/idle.res.$name"
        log "    RSS ${base} KiB -> ${rss} KiB"
    else
        log "    idle test failed against $name: $(cat "$f.err")"
        FAILURES=$((FAILURES + 1))
    fi
    stop_server "$SERVER_PID" || log "    $name exited with status $? on SIGTERM"
}

# skip_reason NAME WHAT: prints why NAME sits out WHAT (a scenario or
# "idle") as SKIP says; false if it does not.
skip_reason() {
    local e
    for e in ${SKIP:-}; do
        if [[ $e == "$1:$2:"* ]]; then
            echo "${e#"$1:$2:"}" | tr _ ' '
            return 0
        fi
    done
    return 1
}

mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }'; }

# vs_base NAME VALUE BASE_VALUE [REF]: "baseline" for the reference server
# REF (default $BASE), else the ratio VALUE / BASE_VALUE.
vs_base() {
    if [[ $1 == "${4:-$BASE}" ]]; then
        echo baseline
        return
    fi
    awk -v a="$2" -v b="$3" 'BEGIN {
        if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}

report_header() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    if [[ -n ${TITLE:-} ]]; then
        echo
        echo "## $TITLE"
    else
        echo "# Echo server benchmark"
    fi
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) CPUs, ${cpu:-unknown CPU}, Linux $(uname -r)"
    echo "- method: bench/loadgen.c, closed loop, every echoed frame verified;" \
        "$R run(s) per scenario, ${D} s measured after ${WARMUP} s warm-up," \
        "median shown; fresh server per run, runs interleaved across servers"
    echo "- pinning: $PINNING"
    echo "- peak RSS: server VmHWM at the end of a run (max over runs)"
    echo "- CPU µs/msg: the server's user+system CPU time over the run divided by" \
        "the messages it handled (measured rate x (warm-up + measured time));" \
        "\"CPU vs\" is the baseline's CPU per message over this server's (1.00 = as lean)"
    echo "- servers:"
    local name
    for name in "${NAMES[@]}"; do
        echo "  - \`$name\`: \`${CMDS[$name]}\`"
    done
}

report_throughput() {
    local scen name r base_mps floor_mps mps extra_h='' extra_s='' extra why base_cpu cpu
    if [[ -n $FLOOR ]]; then
        extra_h=" msgs/s vs $FLOOR |" extra_s="--:|"
    fi
    echo
    echo "| scenario | server | msgs/s | p50 µs | p99 µs | peak RSS MiB | msgs/s vs $BASE |$extra_h CPU µs/msg | CPU vs $BASE |"
    echo "|---|---|--:|--:|--:|--:|--:|$extra_s--:|--:|"
    for scen in "${SCENARIOS[@]}"; do
        base_mps=$(column_stat 1 "$TMP/res.$scen.$BASE")
        base_cpu=$(column_stat 5 "$TMP/res.$scen.$BASE")
        [[ -n $FLOOR ]] && floor_mps=$(column_stat 1 "$TMP/res.$scen.$FLOOR")
        for name in "${NAMES[@]}"; do
            r=$TMP/res.$scen.$name
            mps=$(column_stat 1 "$r")
            cpu=$(column_stat 5 "$r")
            extra=
            if why=$(skip_reason "$name" "$scen"); then
                printf '| %s | %s | not run: %s | - | - | - | - |%s - | - |\n' \
                    "$scen: ${SCEN_DESC[$scen]}" "$name" "$why" "${FLOOR:+ - |}"
                continue
            fi
            [[ -n $FLOOR ]] && extra=" $(vs_base "$name" "$mps" "$floor_mps" "$FLOOR") |"
            printf '| %s | %s | %s | %s | %s | %s | %s |%s %s | %s |\n' \
                "$scen: ${SCEN_DESC[$scen]}" "$name" "$mps" \
                "$(column_stat 2 "$r")" "$(column_stat 3 "$r")" \
                "$(mib "$(column_stat 4 "$r" max)")" \
                "$(vs_base "$name" "$mps" "$base_mps")" "$extra" "$cpu" \
                "$(vs_base "$name" "$base_cpu" "$cpu")"
        done
    done
}

# SUBJECT (default luacomm) against the performance targets: its share of
# the ceiling and the floor, its lead over the best of the other servers
# (the Lua peers) by msgs/s and by CPU per message, and its peak RSS.
# Printed when SUBJECT and at least one peer ran.
declare -A TARGET_CEIL=([A]=0.95 [B]=0.85 [C]=0.75 [D]=0.80 [E]=0.85)
declare -A TARGET_FLOOR=([C]=0.90 [D]=0.90)
TARGET_LEAD=1.15 TARGET_RSS_MIB=6
report_summary() {
    local subj=${SUBJECT:-luacomm} scen name peers=() best best_cpu mps cpu rss ceil floor lead lead_cpu
    [[ -n ${CMDS[$subj]+set} ]] || return 0
    for name in "${NAMES[@]}"; do
        [[ $name == "$subj" || $name == "$BASE" || $name == "$FLOOR" ]] || peers+=("$name")
    done
    ((${#peers[@]} > 0)) || return 0
    echo
    echo "### $subj against the targets (best peer of: ${peers[*]})"
    echo
    echo "| scenario | vs $BASE (target) | vs ${FLOOR:-floor} (target) | lead over best peer, msgs/s | lead, CPU per msg | lead target | peak RSS MiB (≤ $TARGET_RSS_MIB) |"
    echo "|---|--:|--:|--:|--:|--:|--:|"
    for scen in "${SCENARIOS[@]}"; do
        mps=$(column_stat 1 "$TMP/res.$scen.$subj")
        cpu=$(column_stat 5 "$TMP/res.$scen.$subj")
        rss=$(mib "$(column_stat 4 "$TMP/res.$scen.$subj" max)")
        best=- best_cpu=-
        for name in "${peers[@]}"; do
            skip_reason "$name" "$scen" >/dev/null && continue
            best=$(awk -v a="$best" -v b="$(column_stat 1 "$TMP/res.$scen.$name")" 'BEGIN { print (a == "-" || b + 0 > a + 0) ? b : a }')
            best_cpu=$(awk -v a="$best_cpu" -v b="$(column_stat 5 "$TMP/res.$scen.$name")" 'BEGIN { print (a == "-" || (b != "-" && b + 0 < a + 0)) ? b : a }')
        done
        ceil=$(vs_base x "$mps" "$(column_stat 1 "$TMP/res.$scen.$BASE")")
        floor=-
        [[ -n $FLOOR ]] && floor=$(vs_base x "$mps" "$(column_stat 1 "$TMP/res.$scen.$FLOOR")")
        lead=$(awk -v a="$mps" -v b="$best" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%+.0f %%", (a / b - 1) * 100 }')
        lead_cpu=$(awk -v a="$cpu" -v b="$best_cpu" 'BEGIN { if (a == "-" || b == "-" || a == 0) print "-"; else printf "%+.0f %%", (b / a - 1) * 100 }')
        printf '| %s | %s (≥ %s) | %s%s | %s | %s | %s | %s |\n' "$scen" "$ceil" "${TARGET_CEIL[$scen]:--}" \
            "$floor" "${TARGET_FLOOR[$scen]:+ (≥ ${TARGET_FLOOR[$scen]})}" "$lead" "$lead_cpu" \
            "$([[ $scen == A ]] && echo - || echo "≥ +$(awk -v t=$TARGET_LEAD 'BEGIN { printf "%.0f", (t - 1) * 100 }') %")" "$rss"
    done
    echo
    echo "Lead by CPU per message: how much more CPU the best peer spends per message than $subj (where the load generator, not the server, sets the rate, msgs/s ties)."
}

report_idle() {
    local name base rss base_rss=- line why
    if ((IDLE_CONNS == 0)); then
        ((FAILURES > 0)) && printf '\n**%d run(s) failed; see the run.sh log.**\n' "$FAILURES"
        return 0
    fi
    echo
    echo "## $IDLE_CONNS idle connections"
    echo
    echo "| server | RSS before MiB | RSS with $IDLE_CONNS idle MiB | bytes per conn | RSS vs $BASE |"
    echo "|---|--:|--:|--:|--:|"
    [[ -s $TMP/idle.res.$BASE ]] && base_rss=$(awk '{ print $2 }' "$TMP/idle.res.$BASE")
    for name in "${NAMES[@]}"; do
        line="- -"
        [[ -s $TMP/idle.res.$name ]] && line=$(cat "$TMP/idle.res.$name")
        if why=$(skip_reason "$name" idle); then
            printf '| %s | - | not run: %s | - | - |\n' "$name" "$why"
            continue
        fi
        read -r base rss <<<"$line"
        printf '| %s | %s | %s | %s | %s |\n' "$name" "$(mib "$base")" "$(mib "$rss")" \
            "$(awk -v b="$base" -v r="$rss" -v n="$IDLE_CONNS" 'BEGIN {
                if (r == "-") print "-"; else printf "%.0f", (r - b) * 1024 / n }')" \
            "$(vs_base "$name" "$rss" "$base_rss")"
    done
    if ((FAILURES > 0)); then
        echo
        echo "**$FAILURES run(s) failed; see the run.sh log.**"
    fi
}

main() {
    parse_servers "$@"
    setup_pinning
    if [[ -z ${BENCH_NO_BUILD:-} ]]; then
        make -s -f bench/bench.mk build/bench/loadgen build/bench/ceiling build/bench/floor || exit 1
    fi
    TMP=$(mktemp -d)
    trap 'bench_cleanup; rm -rf "$TMP"' EXIT
    # Servers inherit this; 10,000 idle connections need the descriptors.
    ulimit -n "$(ulimit -Hn)"

    local scen run name
    for scen in "${SCENARIOS[@]}"; do
        for ((run = 1; run <= R; run++)); do
            for name in "${NAMES[@]}"; do
                skip_reason "$name" "$scen" >/dev/null || run_one "$scen" "$name" "$run"
            done
        done
    done
    for name in "${NAMES[@]}"; do
        ((IDLE_CONNS > 0)) && ! skip_reason "$name" idle >/dev/null && idle_one "$name"
    done

    { report_header; report_throughput; report_summary; report_idle; } >"$TMP/report.md"
    mkdir -p "$(dirname "$OUT")"
    if [[ -n ${APPEND:-} ]]; then
        cat "$TMP/report.md" >>"$OUT"
    else
        cp "$TMP/report.md" "$OUT"
    fi
    cat "$TMP/report.md"
    ((FAILURES == 0))
}

main "$@"
