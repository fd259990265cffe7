-- The host's allocator for its Lua state (runtime/pool.c): small blocks
-- from per-size lists, large ones and blocks made before it was installed
-- through malloc. A script that makes, grows, shrinks and drops objects
-- of every size around the boundary must see exactly what the standard
-- interpreter sees, and the state must close cleanly.
local helpers = require "helpers"

-- Strings of every length 0..700 (the pool's limit is 512 bytes), tables
-- grown element by element through that limit and shrunk again by the
-- collector, closures and coroutines, all checked after several full
-- collections so that freed blocks are handed out again.
local CHURN = [[
local sum, keep = 0, {}
for round = 1, 6 do
  for len = 0, 700 do
    local s = string.rep(string.char(65 + (len + round) % 26), len)
    keep[len] = s
    local t = {}
    for i = 1, len // 8 do t[i] = i * round end
    t.f = function() return #s + #t end
    sum = sum + t.f() + coroutine.wrap(function(x) coroutine.yield(x + 1) end)(len)
  end
  collectgarbage()
  for len = 0, 700, 7 do
    local s = keep[len]
    assert(#s == len and s == string.rep(s:sub(1, 1), len), "string " .. len .. " changed")
    sum = sum + (s:byte(1) or 0)
  end
end
local big = {}
for i = 1, 200000 do big[i] = tostring(i) end
for i = 1, 200000, 997 do assert(big[i] == tostring(i)) end
big = nil
collectgarbage()
print("sum", sum, "kb>0", collectgarbage("count") > 0)
]]

describe("the host's Lua allocator", function()
  it("gives a script the same results as the standard interpreter", function()
    local st, out, err = helpers.run_host({ "-e", CHURN })
    assert.are.equal(0, st, err)
    local ref_st, ref_out = helpers.run_host({}, { argv = { "lua5.4", "-e", CHURN } })
    assert.are.equal(0, ref_st)
    assert.are.equal(ref_out, out)
    assert.matches("^sum\t%d+\tkb>0\ttrue\n$", out)
  end)
end)
