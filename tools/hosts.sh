#!/bin/sh
# Test hosts made of Linux network namespaces, for the multi-host specs.
#
#   tools/hosts.sh up PREFIX N         N hosts PREFIX-1..N at 10.77.0.1..N/24
#   tools/hosts.sh down PREFIX         kills their processes, removes the namespaces
#   tools/hosts.sh exec PREFIX I CMD…  runs CMD on host I
#   tools/hosts.sh cut PREFIX I J WAY  host I drops traffic with host J:
#                                      both | in (from J) | out (to J)
#   tools/hosts.sh heal PREFIX I       host I drops nothing any more
#   tools/hosts.sh addr I              prints host I's address
#   tools/hosts.sh check               exit 0 if this machine can make hosts,
#                                      else 1 with the reason on stdout
#
# Layout: every host is a namespace with one veth, eth0, whose other end is
# plugged into a bridge that lives in a namespace of its own (PREFIX-br), so
# nothing is added to the caller's namespace and the addresses (a private
# range) are reachable only from the hosts themselves. Two runs with
# different prefixes never see each other. Cuts are nftables rules in the
# host's own namespace (table inet lch), so they go with it.
set -eu

NET=10.77.0

die() { echo "hosts.sh: $*" >&2; exit 1; }

ns() { echo "$1-$2"; }

check() {
  [ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces and nftables)"; return 1; }
  command -v ip >/dev/null 2>&1 || { echo "needs ip (Debian package iproute2)"; return 1; }
  command -v nft >/dev/null 2>&1 || { echo "needs nft (Debian package nftables)"; return 1; }
  probe="lch-probe-$$"
  if ! ip netns add "$probe" 2>/dev/null; then
    echo "cannot create a network namespace here (no CAP_SYS_ADMIN?)"; return 1
  fi
  ok=0
  ip netns exec "$probe" nft add table inet lch 2>/dev/null || ok=1
  ip netns del "$probe"
  [ $ok -eq 0 ] || { echo "nft cannot add a table inside a namespace (no nf_tables?)"; return 1; }
}

up() {
  prefix=$1 n=$2
  case $n in *[!0-9]*|'') die "N must be a number" ;; esac
  [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "N must be 1..250"
  br=$(ns "$prefix" br)
  ip netns add "$br"
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 up
  i=1
  while [ "$i" -le "$n" ]; do
    h=$(ns "$prefix" "$i")
    ip netns add "$h"
    ip -n "$h" link set lo up
    # eth0 in the host, v$i in the bridge's namespace, created in place
    ip link add eth0 netns "$h" type veth peer name "v$i" netns "$br"
    ip -n "$h" addr add "$NET.$i/24" dev eth0
    ip -n "$h" link set eth0 up
    ip -n "$br" link set "v$i" master br0
    ip -n "$br" link set "v$i" up
    ip netns exec "$h" nft -f - <<EOF
table inet lch {
  chain input { type filter hook input priority 0; policy accept; }
  chain output { type filter hook output priority 0; policy accept; }
}
EOF
    i=$((i + 1))
  done
}

down() {
  prefix=$1
  for h in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-([0-9]+|br)\$" || true); do
    # a namespace outlives its last interface while a process holds it
    ip netns pids "$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$h" 2>/dev/null || true
  done
}

cut() {
  h=$(ns "$1" "$2") peer="$NET.$3"
  case $4 in
    both) way="in out" ;;
    in|out) way=$4 ;;
    *) die "WAY must be both, in or out" ;;
  esac
  for w in $way; do
    if [ "$w" = in ]; then ip netns exec "$h" nft add rule inet lch input ip saddr "$peer" drop
    else ip netns exec "$h" nft add rule inet lch output ip daddr "$peer" drop; fi
  done
}

heal() {
  h=$(ns "$1" "$2")
  ip netns exec "$h" nft flush chain inet lch input
  ip netns exec "$h" nft flush chain inet lch output
}

[ $# -ge 1 ] || die "usage: hosts.sh up|down|exec|cut|heal|addr|check ..."
cmd=$1
shift
case $cmd in
  check) check ;;
  up) [ $# -eq 2 ] || die "usage: up PREFIX N"; up "$@" ;;
  down) [ $# -eq 1 ] || die "usage: down PREFIX"; down "$@" ;;
  exec) [ $# -ge 3 ] || die "usage: exec PREFIX I CMD..."; h=$(ns "$1" "$2"); shift 2; exec ip netns exec "$h" "$@" ;;
  cut) [ $# -eq 4 ] || die "usage: cut PREFIX I J both|in|out"; cut "$@" ;;
  heal) [ $# -eq 2 ] || die "usage: heal PREFIX I"; heal "$@" ;;
  addr) [ $# -eq 1 ] || die "usage: addr I"; echo "$NET.$1" ;;
  *) die "unknown command $cmd" ;;
esac
