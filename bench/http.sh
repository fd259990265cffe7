#!/usr/bin/env bash
# HTTP bench: wrk against nginx (one worker, `return 200 "hello"`) and
# luacomm's http.serve with the same hello handler and the same answer from
# C on evhttp with no Lua ("floor", bench/http_floor.c: what http.serve,
# built on evhttp, cannot go below), then a JSON handler that
# calls n:request on a local node: in the same process ("node": the whole
# request, both nodes, on the server's one core) and in a process of its own
# ("node2": the gateway of examples/http in front of a cluster node; the
# back node's CPU is reported beside the front's). Keep-alive, 64
# connections, runs interleaved, medians. Appends a table to $OUT
# (bench/RESULTS.md).
#
# Env: R runs (3), D seconds per run (5), C connections (64), T wrk threads
#   (1), OUT report file, QUICK=1 (1 run of 2 s).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [[ -n ${QUICK:-} && ${QUICK:-} != 0 ]]; then R=${R:-1} D=${D:-2}; fi
R=${R:-3} D=${D:-5} C=${C:-64} T=${T:-1}
OUT=${OUT:-bench/RESULTS.md}
BIN=build/luacomm
FLOOR=build/bench/http_floor
[[ -x $FLOOR ]] || make -s -f bench/bench.mk "$FLOOR" || exit 1
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
NCPU=$(nproc)
pin_server() { if ((NCPU >= 2)); then echo "taskset -c 0"; fi; }
pin_client() { if ((NCPU >= 2)); then echo "taskset -c 1"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_port() {
    for _ in $(seq 200); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.05
    done
    echo "http.sh: nothing answers on port $1" >&2
    return 1
}

start_nginx() {
    local port=$1 dir=$TMP/nginx
    mkdir -p "$dir/logs"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $dir/logs/error.log crit;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 "hello"; }
    }
}
CONF
    $(pin_server) nginx -p "$dir" -c "$dir/nginx.conf" &
    SERVER_PID=$!
}

start_server() { # name port
    case $1 in
        nginx) start_nginx "$2" ;;
        hello) $(pin_server) $BIN bench/http_hello.lua "$2" & SERVER_PID=$! ;;
        floor) $(pin_server) $FLOOR "$2" & SERVER_PID=$! ;;
        node) $(pin_server) $BIN --log-level warn bench/http_node.lua "$2" >/dev/null & SERVER_PID=$! ;;
        node2)
            local bport
            bport=$(free_port)
            $(pin_client) $BIN --log-level warn bench/http_back.lua "$bport" >/dev/null &
            BACK_PID=$!
            $(pin_server) $BIN --log-level warn bench/http_node.lua "$2" "127.0.0.1:$bport" >/dev/null &
            SERVER_PID=$!
            ;;
    esac
}

cpu_ticks() { if [[ -n $1 ]]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }

# One wrk run against the server $SERVER_PID: prints "req/s p50_ms p99_ms
# cpu_us_per_req back_cpu_us_per_req errors". The server's CPU time per
# request (utime+stime over the run) holds steady on a shared machine where
# req/s does not; the back node's ($BACK_PID, if any) is counted apart.
run_wrk() {
    local port=$1 out t0 t1 b0 b1
    wrk -t1 -c1 -d0.5s "http://127.0.0.1:$port/" >/dev/null 2>&1 # warm-up
    t0=$(cpu_ticks "$SERVER_PID")
    b0=$(cpu_ticks "${BACK_PID:-}")
    out=$($(pin_client) wrk -t"$T" -c"$C" -d"${D}s" --latency "http://127.0.0.1:$port/" 2>&1)
    t1=$(cpu_ticks "$SERVER_PID")
    b1=$(cpu_ticks "${BACK_PID:-}")
    local rps p50 p99 errs n cpu bcpu
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu=$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }')
    bcpu=$(awk -v a="$b0" -v b="$b1" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }')
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $cpu $bcpu ${errs:-none}"
}

to_ms() { # wrk prints 1.23ms, 456.00us or 1.02s
    awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
                           else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
                           else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } }'
}

median() { sort -g | awk '{a[NR]=$1} END { print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'; }

NAMES="nginx floor hello node node2"
declare -A RPS P50 P99 CPU BCPU ERRS
for name in $NAMES; do RPS[$name]=""; P50[$name]=""; P99[$name]=""; CPU[$name]=""; BCPU[$name]=""; ERRS[$name]=""; done
for ((r = 1; r <= R; r++)); do
    for name in $NAMES; do
        port=$(free_port)
        BACK_PID=""
        start_server "$name" "$port"
        wait_port "$port" || exit 1
        read -r rps p50 p99 cpu bcpu errs <<<"$(run_wrk "$port")"
        kill "$SERVER_PID" ${BACK_PID:+"$BACK_PID"} 2>/dev/null; wait "$SERVER_PID" ${BACK_PID:+"$BACK_PID"} 2>/dev/null
        echo "http.sh: run $r $name: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu us CPU/req (back node: $bcpu), errors: $errs" >&2
        RPS[$name]+="$rps "; P50[$name]+="$p50 "; P99[$name]+="$p99 "; CPU[$name]+="$cpu "; BCPU[$name]+="$bcpu "
        [[ $errs != none ]] && ERRS[$name]+="$errs"
    done
done

med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median; }
declare -A M50 M99 MRPS MCPU MBCPU
for name in $NAMES; do
    MRPS[$name]=$(med "${RPS[$name]}"); M50[$name]=$(med "${P50[$name]}"); M99[$name]=$(med "${P99[$name]}")
    MCPU[$name]=$(med "${CPU[$name]}"); MBCPU[$name]=$(med "${BCPU[$name]}")
done
cpu_ratio=$(awk -v a="${MCPU[nginx]}" -v b="${MCPU[hello]}" 'BEGIN { printf "%.2f", a / b }')
ratio=$(awk -v a="${MRPS[hello]}" -v b="${MRPS[nginx]}" 'BEGIN { printf "%.2f", a / b }')
p99x=$(awk -v a="${M99[hello]}" -v b="${M99[nginx]}" 'BEGIN { printf "%.2f", a / b }')
floor_ratio=$(awk -v a="${MRPS[floor]}" -v b="${MRPS[nginx]}" 'BEGIN { printf "%.2f", a / b }')
floor_cpu=$(awk -v a="${MCPU[nginx]}" -v b="${MCPU[floor]}" 'BEGIN { printf "%.2f", a / b }')
hello_floor=$(awk -v a="${MCPU[floor]}" -v b="${MCPU[hello]}" 'BEGIN { printf "%.2f", a / b }')
met() { awk -v ok="$1" 'BEGIN { print (ok ? "met" : "NOT met") }'; }

{
    echo
    echo "## HTTP (\`bench/http.sh\`: wrk, keep-alive, $C connections, $T wrk thread(s))"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $R run(s) of ${D} s per server, interleaved, median shown"
    echo "- nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'): one worker, \`return 200 \"hello\"\`, access log off"
    echo "- hello: \`$BIN bench/http_hello.lua PORT\`; evhttp floor: \`$FLOOR PORT\` (the same answer from C on evhttp, no Lua)"
    echo "- JSON + n:request, same process: \`$BIN bench/http_node.lua PORT\`: nodes front and back both in the server process, linked over loopback TCP; the row is HTTP, JSON and both ends of the node request on the server's one core"
    echo "- JSON + n:request, back in its own process: \`bench/http_back.lua BPORT\` (pinned with wrk) and \`bench/http_node.lua PORT 127.0.0.1:BPORT\`: the gateway of examples/http; CPU µs/req is the front's, the back node's in brackets"
    echo
    echo "| server | req/s | p50 ms | p99 ms | server CPU µs/req | vs nginx | target | |"
    echo "|---|--:|--:|--:|--:|--:|---|---|"
    echo "| nginx hello | ${MRPS[nginx]} | ${M50[nginx]} | ${M99[nginx]} | ${MCPU[nginx]} | baseline | | |"
    echo "| evhttp floor hello (C, no Lua) | ${MRPS[floor]} | ${M50[floor]} | ${M99[floor]} | ${MCPU[floor]} | ${floor_ratio} req/s (${floor_cpu} by CPU/req) | | |"
    echo "| luacomm hello | ${MRPS[hello]} | ${M50[hello]} | ${M99[hello]} | ${MCPU[hello]} | ${ratio} req/s (${cpu_ratio} by CPU/req; ${hello_floor} of the floor's), ${p99x}× p99 | ≥ 0.60 req/s, p99 ≤ 2× | $(met "$(awk -v r="$ratio" -v p="$p99x" 'BEGIN{print (r >= 0.6 && p <= 2)}')") |"
    echo "| luacomm JSON + n:request, same process | ${MRPS[node]} | ${M50[node]} | ${M99[node]} | ${MCPU[node]} | | ≥ 30,000 req/s | $(met "$(awk -v r="${MRPS[node]}" 'BEGIN{print (r >= 30000)}')") |"
    echo "| luacomm JSON + n:request, back in its own process | ${MRPS[node2]} | ${M50[node2]} | ${M99[node2]} | ${MCPU[node2]} (back ${MBCPU[node2]}) | | ≥ 30,000 req/s | $(met "$(awk -v r="${MRPS[node2]}" 'BEGIN{print (r >= 30000)}')") |"
    for name in $NAMES; do
        if [[ -n ${ERRS[$name]} ]]; then echo "- $name: wrk reported: ${ERRS[$name]}"; fi
    done
} | tee -a "$OUT"
