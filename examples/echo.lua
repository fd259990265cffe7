-- Echoes every frame back unchanged, per connection, until stopped.
--   luacomm examples/echo.lua [PORT]      (default 7000)
local comm = require "luacomm"

local port = tonumber(... or 7000)
local listener = assert(comm.serve("127.0.0.1:" .. port, function(conn)
  while true do
    local frame = conn:recv()
    if not frame then return end
    conn:send(frame)
  end
end))
comm.log.info("echo listening on %s:%d", listener:addr())
