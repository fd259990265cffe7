#!/usr/bin/env bash
# One node per process: K processes of examples/cluster/node.lua
# (heartbeat 0.2, timeout 1.0) on loopback, node i dialling node i+1 and
# two others at random; after they settle, each process's resident memory
# and CPU over IDLE idle seconds. For docs/SCALING.md.
#
#   bench/scale_procs.sh [K=20] [IDLE=10]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
K=${1:-20} IDLE=${2:-10}
base=$((20000 + RANDOM % 20000))
pids=()
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
for ((i = 1; i <= K; i++)); do
  peers=("127.0.0.1:$((base + i % K + 1))")
  while ((${#peers[@]} < 3)); do
    j=$((RANDOM % K + 1))
    [[ $j -ne $i && " ${peers[*]} " != *":$((base + j)) "* ]] && peers+=("127.0.0.1:$((base + j))")
  done
  build/luacomm examples/cluster/node.lua "n$i" "127.0.0.1:$((base + i))" "${peers[@]}" >/dev/null 2>&1 &
  pids+=($!)
done
# settled when the first node answers a request routed to the last
for ((t = 0; t < 100; t++)); do
  build/luacomm examples/cluster/client.lua "127.0.0.1:$((base + 1))" "n$K" info >/dev/null 2>&1 && break
  sleep 0.2
done
sleep 2
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
declare -A t0
for p in "${pids[@]}"; do t0[$p]=$(ticks "$p"); done
sleep "$IDLE"
hz=$(getconf CLK_TCK)
tot_cpu=0 tot_rss=0
for p in "${pids[@]}"; do
  tot_cpu=$((tot_cpu + $(ticks "$p") - t0[$p]))
  tot_rss=$((tot_rss + $(awk '/VmRSS/ { print $2 }' "/proc/$p/status")))
done
awk -v k="$K" -v c="$tot_cpu" -v hz="$hz" -v idle="$IDLE" -v r="$tot_rss" 'BEGIN {
  printf "{\"processes\":%d,\"idle_cpu_percent_per_process\":%.3f,\"rss_kib_per_process\":%d}\n",
    k, 100 * c / hz / idle / k, r / k }'
