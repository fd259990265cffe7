-- The cluster example under the simulator: the scenario docs/SIMULATION.md
-- starts from (examples/sim/restart_during_partition.lua). Before the fix
-- every seed failed (seed 1 is kept): a node restarted during a partition
-- stamped its next write with a Lamport clock started again from 0, so the
-- write lost to older ones once the partition healed.
local sim = require "luacomm.sim"
local S = require "sim.helpers"

local scenario = dofile("examples/sim/restart_during_partition.lua")(S.CLUSTER)

describe("the cluster example", function()
  it("keeps a write taken by a node restarted during a partition (seed 1)", function()
    sim.run({ seed = 1, print = false }, scenario)
  end)

  it("keeps it over " .. S.SEEDS .. " seeds", function()
    S.assert_no_failures(sim.check{ seeds = S.SEEDS, scenario = scenario })
  end)
end)
