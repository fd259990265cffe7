-- Runs a scenario file of this folder over many seeds and prints the
-- seeds that failed.
--
--   build/luacomm examples/sim/check.lua SCENARIO_FILE [NODE_SCRIPT] [SEEDS]
--
-- SCENARIO_FILE returns make(node_script) -> scenario(net) (see
-- restart_during_partition.lua); NODE_SCRIPT defaults to
-- examples/cluster/node.lua, SEEDS to 20. With LUACOMM_SIM_SEED=N only
-- seed N runs, and LUACOMM_SIM_TRACE=FILE keeps its trace. Exits 1 if any
-- seed failed.
local sim = require "luacomm.sim"

local file, script, seeds = arg[1], arg[2] or "examples/cluster/node.lua", tonumber(arg[3]) or 20
if not file then
  io.stderr:write("usage: check.lua SCENARIO_FILE [NODE_SCRIPT] [SEEDS]\n")
  os.exit(2)
end
local make = dofile(file)
local failures = sim.check{ seeds = seeds, scenario = make(script) }
local ran = (os.getenv("LUACOMM_SIM_SEED") or "") ~= "" and 1 or seeds
print(("%d of %d seed(s) failed"):format(#failures, ran))
for i = 1, math.min(3, #failures) do print(failures[i].err:match("^[^\n]*")) end
if #failures > 0 then os.exit(1) end
