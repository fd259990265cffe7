#!/usr/bin/env bash
# Instructions and system calls per node request (bench/node_cg.lua), for
# 64 and 1 requests in flight over one link:
#   node_cg inflight=K reqs=N server_ir=... server_ir_per_req=X
#   node_cg_client inflight=K ir_per_req=X
#   node_strace srv|cli inflight=K reqs=N syscalls=S per_req=X
# The client's count is the difference between two runs of the client under
# callgrind (COUNT and 3 x COUNT requests), so its start-up cancels out.
# usage: bench/node_cg.sh [COUNT, default 5000]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
COUNT=${1:-5000}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

total_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

for k in 64 1; do
    lua5.4 bench/node_cg.lua "$((COUNT * 2))" "$k" 2>/dev/null
    for n in "$COUNT" "$((COUNT * 3))"; do
        NODE_CG_SERVER=0 valgrind -q --tool=callgrind --callgrind-out-file="$TMP/cli.$n" \
            lua5.4 bench/node_cg.lua "$n" "$k" >/dev/null 2>&1 || { echo "node_cg.sh: client run failed" >&2; exit 1; }
    done
    a=$(total_ir "$TMP/cli.$COUNT") b=$(total_ir "$TMP/cli.$((COUNT * 3))")
    awk -v k="$k" -v a="$a" -v b="$b" -v n="$((COUNT * 2))" \
        'BEGIN { printf "node_cg_client inflight=%d ir_per_req=%.0f\n", k, (b - a) / n }'
    NODE_CG_STRACE=1 lua5.4 bench/node_cg.lua "$COUNT" "$k" 2>/dev/null
done
