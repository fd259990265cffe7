-- The fault-injecting proxy from the shell (the module is
-- luacomm.testing.proxy, installed with the library; docs/TESTING.md):
--   lua5.4 tools/proxy.lua LISTEN UPSTREAM [ACTION:DIR:KIND[:TYPE][*COUNT][@SECONDS]]...
--   e.g. lua5.4 tools/proxy.lua 127.0.0.1:7100 127.0.0.1:7002 drop:down:rep:work*1
-- Uses this checkout's build; also runs under build/luacomm.
local root = (arg and arg[0] and arg[0]:match("^(.*)/tools/[^/]*$")) or "."
package.path = root .. "/scripts/?.lua;" .. package.path
package.cpath = root .. "/build/lib/?.so;" .. package.cpath
require("luacomm.testing.proxy").main(...)
