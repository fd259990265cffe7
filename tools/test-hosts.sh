#!/bin/sh
# make test-hosts: the multi-host specs (spec/hosts) on network-namespace
# test hosts. They need root, ip and nft; where these are missing the run
# says why and is skipped (exit 0), unless LUACOMM_HOSTS_REQUIRED=1 (CI),
# which makes a skip a failure. Whatever the specs leave behind — even
# after a crash or ^C — the trap removes: every namespace of this run
# carries the prefix lch-<pid of this script>.
set -u
cd "$(dirname "$0")/.."
if ! why=$(sh tools/hosts.sh check); then
  echo "test-hosts: SKIPPED: $why"
  [ "${LUACOMM_HOSTS_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
fi
LCH_PREFIX="lch-$$"
export LCH_PREFIX
cleanup() {
  for n in $(ip netns list | awk '{print $1}' | grep "^$LCH_PREFIX-" | sed 's/-\(br\|[0-9]*\)$//' | sort -u); do
    sh tools/hosts.sh down "$n"
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
OUT=${OUT:-build}
st=0
LUACOMM_BIN=$OUT/luacomm lua5.4 /usr/bin/busted --cpath="$OUT/lib/?.so" ${SPECS:-spec/hosts} || st=$?
exit $st
