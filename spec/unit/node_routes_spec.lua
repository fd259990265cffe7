-- luacomm.node.routes: link-state routing table. Announcements are fed in
-- by hand; the table must pick shortest paths over links both ends
-- announce, follow links going down and up, and ignore stale news —
-- including news from a node's previous life.
local routes = require "luacomm.node.routes"

-- { "b", "c" } -> announced links, every node in its first life (inc 1)
-- unless incs says otherwise.
local function links(names, incs)
  local l = {}
  for i, n in ipairs(names) do l[i] = { node = n, inc = (incs or {})[n] or 1 } end
  return l
end

-- A table for `self` that has heard every node's links in `graph`
-- ({ name = { neighbours } }); its own links come from graph[self].
local function table_for(self, graph)
  local r = routes.new(self)
  for name, ns in pairs(graph) do
    if name == self then
      for _, n in ipairs(ns) do r:set_local(n, 1) end
    else
      r:update(name, 1, 1, links(ns))
    end
  end
  return r
end

local CHAIN = { a = { "b" }, b = { "a", "c" }, c = { "b", "d" }, d = { "c" } }

describe("node routing table", function()
  it("routes along a chain through the nearest hop", function()
    local r = table_for("a", CHAIN)
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
    assert.is_true(r:update(first, 1, 2, links{ "a" }))
    assert.are.same({ other, 2 }, { r:next_hop("d") })
    -- this node loses its link to the other hop too: d is unreachable
    assert.is_true(r:set_local(other, nil))
    assert.is_nil(r:next_hop("d"))
    -- and it comes back
    r:set_local(other, 1)
    assert.are.same({ other, 2 }, { r:next_hop("d") })
  end)

  it("ignores stale announcements and takes a new incarnation's", function()
    local r = routes.new("a")
    r:set_local("b", 100)
    assert.is_true(r:update("b", 100, 5, links({ "a", "c" }, { a = 1 })))
    assert.is_true(r:update("c", 1, 1, links({ "b" }, { b = 100 })))
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
    assert.is_false(r:update("b", 100, 5, links{ "a" }))  -- same seq
    assert.is_false(r:update("b", 100, 4, links{ "a" }))  -- older seq
    assert.is_false(r:update("b", 99, 50, links{ "a" }))  -- older incarnation
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
    assert.is_false(r:update("a", 999, 1, links{ "x" }))  -- news about itself
  end)

  it("trusts nothing a node said in its previous life", function()
    -- chain a-b-c-d; then c dies and comes back (inc 2) linked to b only.
    local r = table_for("a", CHAIN)
    assert.is_true(r:update("b", 1, 2, links{ "a" }))            -- b loses the old c
    assert.is_nil(r:next_hop("d"))
    -- b's news of the new c arrives before c's own: the old c's claim to a
    -- link with d must not bring d back
    assert.is_true(r:update("b", 1, 3, links({ "a", "c" }, { c = 2 })))
    assert.is_nil(r:next_hop("c"))
    assert.is_nil(r:next_hop("d"))
    assert.is_nil(r:entry("c"), "the old life's announcement should be dropped")
    assert.is_true(r:update("c", 2, 1, links{ "b" }))
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
    assert.is_nil(r:next_hop("d"))
    -- the new c links d (which still names the old c, then the new one)
    assert.is_true(r:update("c", 2, 2, links{ "b", "d" }))
    assert.is_nil(r:next_hop("d"))
    assert.is_true(r:update("d", 1, 2, links({ "c" }, { c = 2 })))
    assert.are.same({ "b", 3 }, { r:next_hop("d") })
  end)

  it("uses a neighbour's news only from the life it is linked to", function()
    local r = routes.new("a")
    r:set_local("b", 2)
    r:update("b", 1, 9, links{ "a", "c" }) -- b's previous life
    r:update("c", 1, 1, links({ "b" }, { b = 1 }))
    assert.are.same({ "b", 1 }, { r:next_hop("b") })
    assert.is_nil(r:next_hop("c"))
  end)

  it("recomputes only when the topology changed (O(1) per lookup)", function()
    local r = table_for("a", { a = { "b" }, b = { "a", "c" }, c = { "b" } })
    local n = 0
    local recompute = r._recompute
    r._recompute = function(self) n = n + 1; return recompute(self) end
    for _ = 1, 1000 do r:next_hop("c"); r:next_hop("b"); r:reachable() end
    assert.are.equal(1, n)
    r:update("c", 1, 2, links{ "b" }) -- same links, newer seq: one more
    r:next_hop("c")
    assert.are.equal(2, n)
    assert.is_false(r:set_local("b", 1)) -- no change, no recompute
    r:next_hop("c")
    assert.are.equal(2, n)
  end)

  it("hands out every entry to sync a new neighbour, and forgets", function()
    local r = table_for("a", { a = { "b" }, b = { "a", "c" }, c = { "b" } })
    local got = {}
    for _, e in ipairs(r:entries()) do got[e.origin] = e end
    assert.are.same(links{ "a", "c" }, got.b.links)
    assert.are.equal(1, got.c.epoch)
    r:forget("c")
    assert.is_nil(r:next_hop("c"))
    assert.are.same(links{ "b" }, r:local_links())
  end)
  it("agrees on a digest when the news is the same, whatever its order, and not when one misses some", function()
    -- every node of the chain, own announcement at seq 1, inc 1
    local views = {}
    for name in pairs(CHAIN) do views[name] = table_for(name, CHAIN) end
    local d = views.a:digest(1, 1)
    for name, r in pairs(views) do assert.are.equal(d, r:digest(1, 1), name) end
    assert.is_true(math.type(d) == "integer" and d >= 0 and d < 2 ^ 32)
    -- c announces again (seq 2); b has it, a not yet: they differ
    views.b:update("c", 1, 2, links{ "b", "d" })
    assert.are_not.equal(views.a:digest(1, 1), views.b:digest(1, 1))
    views.a:update("c", 1, 2, links{ "b", "d" })
    assert.are.equal(views.a:digest(1, 1), views.b:digest(1, 1))
    -- a node's own seq counts: a's next announcement changes a's digest
    assert.are_not.equal(views.a:digest(1, 1), views.a:digest(1, 2))
    -- news of nodes no route reaches does not count (it cannot be mended)
    local before = views.a:digest(1, 1)
    views.a:update("z", 1, 1, links{ "y" })
    assert.are.equal(before, views.a:digest(1, 1))
  end)

  it("lets no dead node's leftover news vouch for a neighbour's dead life", function()
    -- a - b - c, and x was linked to c: x is gone (nobody names it), but
    -- its last news, naming c's life 5, stays
    local r = routes.new("a")
    r:set_local("b", 1)
    r:update("b", 1, 1, links({ "a", "c" }, { c = 5 }))
    r:update("c", 5, 1, links({ "b", "x" }, { x = 1 }))
    r:update("x", 1, 1, links({ "c" }, { c = 5 }))
    r:update("c", 5, 2, links{ "b" })
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
    assert.is_nil(r:next_hop("x"))
    -- c restarts with its clock stepped back: life 3; b names it
    r:update("b", 1, 2, links({ "a", "c" }, { c = 3 }))
    assert.is_true(r:update("c", 3, 1, links{ "b" }))
    assert.are.same({ "b", 2 }, { r:next_hop("c") })
  end)
end)
