-- Simulated messages per real second: a five-node cluster on luacomm.sim,
-- every node keeping requests in flight to the others (bench/sim_node.lua).
-- Prints a section for bench/RESULTS.md. Messages are frames delivered;
-- the time is the process's CPU time. SIM_TRACE=events leaves frames out
-- of the trace (sim.run's trace option).
--   lua5.4 bench/sim_rate.lua [VIRTUAL_SECONDS] [WORKERS]
package.path = "scripts/?.lua;scripts/?/init.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath
local sim = require "luacomm.sim"

local seconds, workers = tonumber(arg[1]) or 20, tonumber(arg[2]) or 8
local names = { "a", "b", "c", "d", "e" }
local clock0 = os.clock()
local net, requests = sim.run({ seed = 1, print = false, latency = { 0.0005, 0.002 }, trace = os.getenv("SIM_TRACE") }, function(net)
  for _, n in ipairs(names) do
    local args = { n, n .. ":1", workers }
    for _, p in ipairs(names) do if p ~= n then args[#args + 1] = p .. ":1" end end
    net:spawn(n, "bench/sim_node.lua", table.unpack(args))
  end
  net:sleep(seconds)
  local done = 0
  for _, n in ipairs(names) do done = done + net:state(n).done end
  return done
end)
local real = os.clock() - clock0
local msgs = net:delivered()
local rate = msgs / real
print("\n## Simulation (`bench/sim_rate.lua`: five nodes on luacomm.sim exchanging requests)\n")
print("| measure | result | target | |")
print("|---|--:|--:|---|")
print(("| simulated messages per CPU second (%d workers a node, %g virtual s, trace %s) |"
       .. " %.0f (%d frames, %d requests, %.2f s) | ≥ 50,000 | %s |")
  :format(workers, seconds, os.getenv("SIM_TRACE") or "frames", rate, msgs, requests, real,
          rate >= 50000 and "met" or "**missed**"))
