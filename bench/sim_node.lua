-- A node for bench/sim_rate.lua: answers "echo" and keeps `workers`
-- requests in flight to the other nodes, round robin.
--   sim_node.lua NAME ADDR WORKERS PEER...
local comm = require "luacomm"
local node = require "luacomm.node"

local M = {}

function M.start(state, name, addr, workers, ...)
  local peers = { ... }
  local names = {}
  for i, p in ipairs(peers) do names[i] = p:match("^([^:]+)") end
  state.node = node.new{ name = name, listen = addr, peers = peers, heartbeat = 0.5, timeout = 2 }
  state.node:on("echo", function(body) return body end)
  assert(state.node:start())
  state.done = 0
  for w = 1, tonumber(workers) do
    comm.spawn(function()
      comm.sleep(1) -- links up
      local i = w
      while true do
        i = i % #names + 1
        if state.node:request(names[i], "echo", { n = i, from = name }, { timeout = 1 }) then
          state.done = state.done + 1
        end
      end
    end)
  end
end

return M
