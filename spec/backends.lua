-- The two implementations of the luacomm module that specs written
-- against section 2 run on: the real one (luacomm.core over libevent) and
-- the simulated one of luacomm.sim (virtual time, simulated network).
-- A spec body written as function(comm, host) runs on both, so the
-- simulator cannot drift from the runtime.
--
--   for _, b in ipairs(require("backends")) do
--     describe("thing on " .. b.name, function()
--       it("works", function() b.run(function(comm, host) ... end) end)
--     end)
--   end
local real_comm = require "luacomm"
local helpers = require "helpers"
local sim = require "luacomm.sim"

local B = {
  {
    name = "luacomm",
    -- fn(comm, host) in a task of the real loop; host is loopback
    run = function(fn) return helpers.run(function() return fn(real_comm, "127.0.0.1") end) end,
    -- the module, for calls made outside any task
    module = function() return real_comm end,
  },
  {
    name = "luacomm.sim",
    -- fn(comm, host) in the spec task of a simulation (random seed: a
    -- failure names it); host is any name
    run = function(fn)
      local r = table.pack(sim.run({ print = false }, function(net) return fn(net:comm(), "sim") end))
      return table.unpack(r, 2, r.n)
    end,
    module = function()
      local _, m = sim.run({ print = false }, function(net) return net:comm() end)
      return m
    end,
  },
}

-- A listener on an ephemeral port of host, its "host:port" and port.
function B.listen(comm, host, opts)
  local l = assert(comm.listen(host .. ":0", opts))
  local h, port = l:addr()
  return l, h .. ":" .. port, port
end

-- A connected pair: client side, server side, listener.
function B.pair(comm, host, opts)
  local l, addr = B.listen(comm, host, opts)
  local c = assert(comm.connect(addr, opts))
  local s = assert(l:accept(5))
  return c, s, l
end

-- Polls pred every `step` seconds of comm's clock until it is true or
-- `timeout` passed: the value, or nil, "timeout". Inside a task.
function B.wait_until(comm, pred, timeout, step)
  local deadline = comm.now() + (timeout or 10)
  while true do
    local v = pred()
    if v then return v end
    if comm.now() >= deadline then return nil, "timeout" end
    comm.sleep(step or 0.02)
  end
end

return B
