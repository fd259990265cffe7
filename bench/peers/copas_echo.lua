-- Length-framed echo on copas (LuaSocket plus coroutines), the style of its
-- manual: copas.addserver with a handler per connection, copas.wrap'ed
-- socket, blocking-style receive/send, copas.loop().
--
-- Debian 12's lua-copas (Copas 1.1.7) installs copas.lua only under
-- /usr/share/lua/5.1 and 5.2. It is pure Lua and its dependencies
-- (LuaSocket, coxpcall) exist for 5.4, so it runs here under lua5.4 with
-- that directory appended to package.path (see the Makefile), the same
-- interpreter as luacomm. Copas 1.1.7 waits with select(): it cannot hold
-- descriptors past FD_SETSIZE (1024).
--   lua5.4 bench/peers/copas_echo.lua PORT
local copas = require "copas"
local socket = require "socket"

local port = assert(tonumber(arg[1]), "usage: copas_echo.lua PORT")
local MAX_FRAME = 16 * 1024 * 1024

local function serve(skt)
  skt:setoption("tcp-nodelay", true)
  local con = copas.wrap(skt)
  while true do
    local h = con:receive(4)
    if not h then break end
    local len = string.unpack(">I4", h)
    if len > MAX_FRAME then break end
    local payload = len > 0 and con:receive(len) or ""
    if not payload then break end
    if not con:send(string.pack(">I4", #payload) .. payload) then break end
  end
  skt:close()
end

local server = assert(socket.bind("127.0.0.1", port))
copas.addserver(server, serve)
copas.loop()
