#!/bin/sh
# Installs the Debian 12 packages luacomm needs to build, test and benchmark
# (with "bench": also wrk, nginx, and lua-luv, lua-cqueues, lua-copas and
# lua-socket for the Lua peers in make bench), and does nothing (quickly)
# when they are all present already.
set -eu
PKGS="gcc make pkg-config libevent-dev liblua5.4-dev lua5.4 lua-cjson lua-cjson-dev lua-busted lua-check libssl-dev clang-format luarocks man-db curl prometheus iproute2 nftables openssl python3 clang libclang-rt-14-dev"
# `install-deps.sh bench`: the load generator and the reference server too.
if [ "${1:-}" = bench ]; then PKGS="$PKGS wrk nginx lua-luv lua-cqueues lua-copas lua-socket"; fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages:$missing — run as root, or: sudo apt-get install$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# nginx's package would start a system service on port 80: the bench runs
# its own nginx from a generated config, so no service may start here.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends $missing >/dev/null
