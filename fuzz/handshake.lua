-- The link handshake, both ways: what an accepting node makes of the first
-- frames a stranger sends (hello, and with a secret whatever proof the
-- protocol asks for), and what a dialling node makes of the answers to its
-- hello (welcome, reject, ...). The node must survive and keep serving.
--
-- Input: byte 1, flags (bit 0: the node dials a fake peer that answers
-- with the frames; else the frames go to the node's listener; bit 1: both
-- nodes share a secret, where the node module supports one); the rest,
-- frames separated by "\0".
local comm = require "luacomm"
local F = require "nodefuzz"

return function(data)
  local flags = data:byte(1) or 0
  local frames = F.frames(data:sub(2))
  local secret = flags & 2 == 2 and "fuzz-secret" or nil
  F.run(function()
    if flags & 1 == 0 then
      local n = F.node("fz", { listen = "127.0.0.1:0", secret = secret })
      local addr = n.listen_addr
      local c = assert(comm.connect(addr))
      for _, f in ipairs(frames) do
        if not c:send(f) then break end
      end
      F.drain(c, nil, 0.3)
      c:close()
      F.probe(addr, "fz", secret)
      n:stop()
    else
      -- the fake peer the node dials: answers its first frame with ours
      local l = assert(comm.listen("127.0.0.1:0"))
      local fake_addr = ("%s:%d"):format(l:addr())
      local n = F.node("fz", { listen = "127.0.0.1:0", peers = { fake_addr }, secret = secret })
      local addr = n.listen_addr
      local c = l:accept(2)
      l:close()
      if c then
        c:recv(1)
        for _, f in ipairs(frames) do
          if not c:send(f) then break end
        end
        F.drain(c, nil, 0.3)
        c:close()
      end
      F.probe(addr, "fz", secret)
      n:stop()
    end
  end)
end
