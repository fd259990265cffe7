-- The node's receive path: envelope decoding and dispatch on a link, as a
-- hostile or broken peer would drive it. Bad frames must never crash the
-- node, nor stop it serving a well-behaved peer afterwards.
--
-- Input: byte 1, flags (bit 0: open with a valid hello, so the frames
-- reach the link's dispatch; bit 1: then check that a well-behaved peer
-- still gets answers, which costs half the time of a run); the rest,
-- frames separated by "\0". Every run checks that no task failed.
local comm = require "luacomm"
local F = require "nodefuzz"

return function(data)
  local flags = data:byte(1) or 0
  local frames = F.frames(data:sub(2))
  F.run(function()
    local n = F.node("fz", { listen = "127.0.0.1:0" })
    local addr = n.listen_addr
    local c = assert(comm.connect(addr))
    if flags & 1 == 1 then
      c:send(comm.json.encode{ kind = "hello", v = F.PROTOCOL, node = "peer", inc = 1 })
      F.drain(c, "welcome", 1)
    end
    for _, f in ipairs(frames) do
      if not c:send(f) then break end
    end
    -- a last ping: its pong says every frame before it was dispatched
    c:send('{"kind":"ping","t":4242.5}')
    F.drain(c, "4242.5", 2)
    c:close()
    if flags & 2 == 2 then F.probe(addr, "fz") end
    n:stop()
  end)
end
