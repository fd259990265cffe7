-- Echoes every frame back unchanged, per connection, until stopped.
--   luacomm examples/echo.lua [PORT [CERT KEY]]   (default 7000)
-- With CERT and KEY (PEM files) it speaks TLS.
local comm = require "luacomm"

local port, cert, key = ...
port = tonumber(port or 7000)
local tls = cert and { cert = cert, key = key } or nil
local listener = assert(comm.serve("127.0.0.1:" .. port, function(conn)
  while true do
    local frame = conn:recv()
    if not frame then return end
    conn:send(frame)
  end
end, { tls = tls }))
comm.log.info("echo listening on %s:%d", listener:addr())
