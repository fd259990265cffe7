-- A node restarts while it is cut off from the rest of the cluster, a
-- client on its side of the cut writes a key through it, and the cut
-- heals: every node must then hold that write. docs/SIMULATION.md walks
-- through this scenario; examples/sim/check.lua runs it over many seeds.
--
-- This file returns make(node_script) -> scenario(net), the scenario for
-- a cluster of three nodes running node_script (its arguments as
-- examples/cluster/node.lua takes them).
local names = { "a", "b", "c" }
local tries = { timeout = 1, retries = 3 }

return function(script) return function(net)
  for _, n in ipairs(names) do
    local args = { n, n .. ":1" }
    for _, p in ipairs(names) do if p ~= n then args[#args + 1] = p .. ":1" end end
    net:spawn(n, script, table.unpack(args))
  end
  local left = net:client("left", "a:1")
  assert(left:request("a", "put", { key = "colour", value = "blue" }, tries))
  assert(left:request("c", "put", { key = "colour", value = "green" }, tries))
  net:sleep(net:random())
  -- b and a client next to it on one side, the rest on the other
  net:partition({ "b", "right" }, { "a", "c", "left" })
  net:sleep(net:random() * 2)
  net:crash("b")
  net:sleep(net:random())
  net:restart("b")
  local right = net:client("right", "b:1")
  assert(right:request("b", "put", { key = "colour", value = "red" }, tries))
  net:sleep(net:random() * 2)
  net:heal()
  net:sleep(3)
  for _, n in ipairs(names) do
    local r = assert(left:request(n, "get", { key = "colour" }, tries))
    assert(r.value == "red", ("after the heal %s has colour=%s (t=%s, by %s): the write to b is lost")
      :format(n, tostring(r.value), tostring(r.t), tostring(r.by)))
  end
end end
