-- luacomm.sim.json: the order-independent encoder simulated processes
-- use for comm.json.encode. Its text must decode (with lua-cjson) to what
-- lua-cjson's own text decodes to, list object keys sorted, and refuse
-- what lua-cjson refuses.
local simjson = require "luacomm.sim.json"
local cjson = require("cjson").new()
cjson.encode_invalid_numbers(false)

describe("luacomm.sim.json", function()
  local values = {
    0, -1, 1.5, 1e300, -2.25e-7, 2 ^ 53, 1700000000123, "", "plain", "quote \" slash / back \\ nl \n tab \t",
    "utf-8 é ✓", "\0\1\31", true, false, cjson.null, {}, { 1, 2, 3 }, { "a", { "b", { "c" } } },
    { a = 1, b = { c = "d" } }, { [1] = "one", [3] = "three" }, { [1] = "x", y = "mixed" },
    { [1.5] = "float key" }, { [-1] = "negative key" }, { kind = "req", src = "a", dst = "b", id = 7, body = { k = { 1, 2 } } },
  }

  it("decodes to what lua-cjson's own text decodes to", function()
    for i, v in ipairs(values) do
      local ours, theirs = simjson.encode(v), cjson.encode(v)
      assert.are.same(cjson.decode(theirs), cjson.decode(ours), "value " .. i .. ": " .. ours)
    end
  end)

  it("writes object keys sorted, whatever order the table was built in", function()
    local t1, t2 = {}, {}
    for _, k in ipairs{ "zeta", "alpha", "mid", "beta" } do t1[k] = #k end
    for _, k in ipairs{ "beta", "mid", "zeta", "alpha" } do t2[k] = #k end
    assert.are.equal('{"alpha":5,"beta":4,"mid":3,"zeta":4}', simjson.encode(t1))
    assert.are.equal(simjson.encode(t1), simjson.encode(t2))
    assert.are.equal('{"1":"x","y":"mixed"}', simjson.encode{ [1] = "x", y = "mixed" })
  end)

  it("refuses what lua-cjson refuses, with its words", function()
    local cycle = {}
    cycle.self = cycle
    for _, bad in ipairs{ { print }, { f = print }, { [true] = 1 }, { [20] = 1 }, cycle, 0 / 0, math.huge } do
      local ok1 = pcall(cjson.encode, bad)
      local ok2, err = pcall(simjson.encode, bad)
      assert.is_false(ok1)
      assert.is_false(ok2)
      assert.matches("^.*Cannot serialise", err)
    end
  end)
end)
