-- luarocks make: builds the host and the module from this checkout and
-- installs them in a rocks tree (the library in its share/lua/5.4, the C
-- module in lib/lua/5.4, the luacomm command in bin).
--   luarocks --lua-version 5.4 --tree TREE make luacomm-0.1.0-1.rockspec
-- Needs Debian's lua5.4, liblua5.4-dev, libevent-dev, libssl-dev and lua-cjson
-- (tools/install-deps.sh): they come from the system, not from rocks.
rockspec_format = "3.0"
package = "luacomm"
version = "0.1.0-1"
source = {
  url = "git+file:///dev/null", -- built from a checkout: `luarocks make`
}
description = {
  summary = "A scriptable messaging runtime: libevent sockets and timers as blocking-style Lua calls",
  detailed = [[
luacomm embeds Lua 5.4 in a small C host and turns libevent sockets, timers
and length-framed send/recv into calls that yield the calling coroutine.
Node behaviour (routing, retries, heartbeats, request/reply) is Lua, hot
reloaded on SIGHUP; the same module runs under stock lua5.4 and busted.]],
  license = "MIT",
  labels = { "networking", "libevent", "coroutines" },
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBEVENT = { header = "event2/event.h" },
  OPENSSL = { header = "openssl/ssl.h" },
}
build = {
  type = "make",
  build_target = "all",
  build_variables = {
    CFLAGS = "-O2 -g",
    LUA_SHARE = "$(LUADIR)",
    LUA_LIB = "$(LIBDIR)",
  },
  install_target = "install-rock",
  install_variables = {
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LUA_SHARE = "$(LUADIR)",
    LUA_LIB = "$(LIBDIR)",
  },
}
