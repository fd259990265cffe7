-- luacomm.node.dedup: per-sender memory of recent request ids, with a
-- clock under the spec's control.
local dedup = require "luacomm.node.dedup"

local function cache(opts)
  local t = 0
  opts = opts or {}
  opts.now = function() return t end
  return dedup.new(opts), function(s) t = t + s end
end

describe("node dedup cache", function()
  it("runs a request once and hands its reply to every retry", function()
    local c = cache()
    assert.are.equal("new", c:begin("a", 1, 7))
    assert.are.equal("running", c:begin("a", 1, 7))
    c:finish("a", 1, 7, "reply-7")
    assert.are.same({ "done", "reply-7" }, { c:begin("a", 1, 7) })
    assert.are.same({ "done", "reply-7" }, { c:begin("a", 1, 7) })
  end)

  it("keeps senders apart", function()
    local c = cache()
    assert.are.equal("new", c:begin("a", 1, 1))
    assert.are.equal("new", c:begin("b", 1, 1))
    c:finish("b", 1, 1, "from b")
    assert.are.equal("running", c:begin("a", 1, 1))
    assert.are.equal(1, c:size("a"))
    assert.are.equal(2, c:size())
  end)

  it("forgets a sender's ids when it restarts (new incarnation)", function()
    local c = cache()
    c:begin("a", 1, 1)
    c:finish("a", 1, 1, "old")
    assert.are.equal("new", c:begin("a", 2, 1))
    c:finish("a", 1, 1, "late finish of the old incarnation") -- ignored
    assert.are.equal("running", c:begin("a", 2, 1))
  end)

  it("keeps at most max ids per sender, evicting the oldest", function()
    local c = cache{ max = 3 }
    for id = 1, 5 do
      c:begin("a", 1, id)
      c:finish("a", 1, id, "r" .. id)
    end
    assert.are.equal(3, c:size("a"))
    assert.are.equal("new", c:begin("a", 1, 1))          -- evicted: runs again
    assert.are.same({ "done", "r5" }, { c:begin("a", 1, 5) })
  end)

  it("expires ids older than ttl as new ones arrive", function()
    local c, advance = cache{ ttl = 10 }
    c:begin("a", 1, 1)
    c:finish("a", 1, 1, "r1")
    advance(5)
    c:begin("a", 1, 2)
    assert.are.same({ "done", "r1" }, { c:begin("a", 1, 1) })
    advance(6) -- id 1 is 11 s old, id 2 is 6 s old
    c:begin("a", 1, 3)
    assert.are.equal(2, c:size("a"))
    assert.are.equal("new", c:begin("a", 1, 1))
  end)

  it("forgets senders: silent ones after ttl, and never more than its cap", function()
    local c, tick = cache{ ttl = 10, senders = 100 }
    for i = 1, 20000 do c:begin("src" .. i, 1, 1) end
    assert.is_true(c:senders_count() <= 100, c:senders_count())
    local n = 0
    for _ in pairs(c.senders) do n = n + 1 end
    assert.are.equal(c:senders_count(), n)
    -- the most recent are the ones kept
    assert.are.equal("running", c:begin("src20000", 1, 1))
    tick(11)
    for i = 1, 70 do c:begin("late" .. i, 1, 1) end
    assert.is_true(c:senders_count() <= 70 + 64, c:senders_count())
    assert.are.equal("new", c:begin("src20000", 1, 1))
  end)
end)
