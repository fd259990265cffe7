-- luacomm.node.routes: link-state routing table. Announcements are fed in
-- by hand; the table must pick shortest paths over links both ends
-- announce, follow links going down and up, and ignore stale news.
local routes = require "luacomm.node.routes"

-- A table for `self` that has heard every node's links in `graph`
-- ({ name = { neighbours } }); its own links come from graph[self].
local function table_for(self, graph, epoch)
  local r = routes.new(self)
  for name, links in pairs(graph) do
    if name == self then
      for _, n in ipairs(links) do r:set_local(n, true) end
    else
      r:update(name, epoch or 1, 1, links)
    end
  end
  return r
end

describe("node routing table", function()
  it("routes along a chain through the nearest hop", function()
    local r = table_for("a", { a = { "b" }, b = { "a", "c" }, c = { "b", "d" }, d = { "c" } })
    assert.are.same({ "b", 1 }, { r:next_hop("b") })
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
    assert.are.same({ "b", 3 }, { r:next_hop("d") })
    assert.are.same({ "b", "c", "d" }, r:reachable())
    assert.is_nil(r:next_hop("a"))
    assert.is_nil(r:next_hop("nobody"))
  end)

  it("prefers the shorter of two paths", function()
    -- a-b-c-d and a-e-d: d is 2 hops via e
    local r = table_for("a", { a = { "b", "e" }, b = { "a", "c" }, c = { "b", "d" },
                               d = { "c", "e" }, e = { "a", "d" } })
    assert.are.same({ "e", 2 }, { r:next_hop("d") })
  end)

  it("uses only links that both ends announce", function()
    -- c claims a link to d, but d does not list c (a stale or one-sided view)
    local r = table_for("a", { a = { "b" }, b = { "a", "c" }, c = { "b", "d" }, d = {} })
    assert.is_nil(r:next_hop("d"))
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
  end)

  it("follows a link going down and coming back", function()
    local r = table_for("a", { a = { "b", "c" }, b = { "a", "d" }, c = { "a", "d" }, d = { "b", "c" } })
    local first = r:next_hop("d")
    local other = first == "b" and "c" or "b"
    -- the first hop's link to d goes down: it announces so with a newer seq
    assert.is_true(r:update(first, 1, 2, { "a" }))
    assert.are.same({ other, 2 }, { r:next_hop("d") })
    -- this node loses its link to the other hop too: d is unreachable
    assert.is_true(r:set_local(other, false))
    assert.is_nil(r:next_hop("d"))
    -- and it comes back
    r:set_local(other, true)
    assert.are.same({ other, 2 }, { r:next_hop("d") })
  end)

  it("ignores stale announcements and takes a new incarnation's", function()
    local r = routes.new("a")
    r:set_local("b", true)
    assert.is_true(r:update("b", 100, 5, { "a", "c" }))
    assert.is_true(r:update("c", 100, 1, { "b" }))
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
    assert.is_false(r:update("b", 100, 5, { "a" }))  -- same seq
    assert.is_false(r:update("b", 100, 4, { "a" }))  -- older seq
    assert.is_false(r:update("b", 99, 50, { "a" }))  -- older incarnation
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
    assert.is_true(r:update("b", 101, 1, { "a" }))   -- b restarted: seq starts over
    assert.is_nil(r:next_hop("c"))
    assert.is_false(r:update("a", 999, 1, { "x" }))  -- news about itself
  end)

  it("recomputes only when the topology changed (O(1) per lookup)", function()
    local r = table_for("a", { a = { "b" }, b = { "a", "c" }, c = { "b" } })
    local n = 0
    local recompute = r._recompute
    r._recompute = function(self) n = n + 1; return recompute(self) end
    for _ = 1, 1000 do r:next_hop("c"); r:next_hop("b"); r:reachable() end
    assert.are.equal(1, n)
    r:update("c", 1, 2, { "b" }) -- same links, newer seq: one more
    r:next_hop("c")
    assert.are.equal(2, n)
    assert.is_false(r:set_local("b", true)) -- no change, no recompute
    r:next_hop("c")
    assert.are.equal(2, n)
  end)

  it("hands out every entry to sync a new neighbour, and forgets", function()
    local r = table_for("a", { a = { "b" }, b = { "a", "c" }, c = { "b" } }, 7)
    local got = {}
    for _, e in ipairs(r:entries()) do got[e.origin] = e end
    assert.are.same({ "a", "c" }, got.b.links)
    assert.are.equal(7, got.c.epoch)
    r:forget("c")
    assert.is_nil(r:next_hop("c"))
    assert.are.same({ "b" }, r:local_links())
  end)
end)
