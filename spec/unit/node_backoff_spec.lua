-- luacomm.node.backoff: the delays between redials and between request
-- retries. A fixed `random` makes the sequence exact.
local backoff = require "luacomm.node.backoff"

local function draws(b, n)
  local t = {}
  for i = 1, n do t[i] = b:next() end
  return t
end

describe("node backoff", function()
  it("doubles from min up to max at the top of the jitter range", function()
    local b = backoff.new{ min = 0.1, max = 1, random = function() return 1 end }
    local d = draws(b, 6)
    local want = { 0.1, 0.2, 0.4, 0.8, 1, 1 }
    for i, w in ipairs(want) do assert.is_near(w, d[i], 1e-9) end
  end)

  it("halves at the bottom of the jitter range but never goes under min", function()
    local b = backoff.new{ min = 0.1, max = 1, random = function() return 0 end }
    local d = draws(b, 5)
    local want = { 0.1, 0.1, 0.2, 0.4, 0.5 }
    for i, w in ipairs(want) do assert.is_near(w, d[i], 1e-9) end
  end)

  it("stays within [min, max] with real randomness, and jitters", function()
    local firsts, seen = {}, 0
    for _ = 1, 50 do
      local b = backoff.new{ min = 0.05, max = 5 }
      for _, v in ipairs(draws(b, 30)) do
        assert.is_true(v >= 0.05 and v <= 5, "delay out of bounds: " .. v)
      end
      local b2 = backoff.new{ min = 0.05, max = 5 }
      b2:next()
      local v = b2:next() -- in [0.05, 0.1]
      if not firsts[v] then firsts[v], seen = true, seen + 1 end
    end
    assert.is_true(seen > 1, "every node would redial in lockstep")
  end)

  it("starts short again after reset", function()
    local b = backoff.new{ min = 0.1, max = 10, random = function() return 1 end }
    draws(b, 5)
    b:reset()
    assert.is_near(0.1, b:next(), 1e-9)
    assert.is_near(0.2, b:next(), 1e-9)
  end)

  it("does not overflow after many failures", function()
    local b = backoff.new{ min = 0.001, max = 3, random = function() return 1 end }
    local last
    for _ = 1, 5000 do last = b:next() end
    assert.are.equal(3, last)
  end)

  it("rejects bounds that make no sense", function()
    assert.has_error(function() backoff.new{ min = 0 } end)
    assert.has_error(function() backoff.new{ min = 2, max = 1 } end)
    assert.has_error(function() backoff.new{ min = 1, max = 2, factor = 0.5 } end)
  end)
end)
