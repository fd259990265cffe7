-- The node library between real processes on loopback: a three-node mesh
-- in which every node dials both others, and the spec joins it as node
-- "t", dialling only "a" (so whatever it asks of b and c is routed).
local comm = require "luacomm"
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"

describe("node mesh", function()
  local cl

  setup(function()
    cl = cluster.start({
      { name = "a", peers = { "b", "c" } },
      { name = "b", peers = { "a", "c" } },
      { name = "c", peers = { "a", "b" } },
    }, { heartbeat = 0.1, timeout = 1 })
  end)

  teardown(function() cl:stop_clean() end)

  local function with_client(fn) cl:with_client({ "a" }, fn) end

  it("comes up with exactly one link per pair, though every node dialled both others", function()
    for _, name in ipairs{ "a", "b", "c" } do
      for _, other in ipairs{ "a", "b", "c" } do
        if other ~= name then assert(cl:wait_line(name, "up " .. other), name .. " never saw " .. other) end
      end
    end
    with_client(function(t)
      -- Both dials of a pair may complete; the loser is retired within
      -- moments, and then each node holds one link (and one connection)
      -- per peer: a three (b, c and t), b and c two.
      local want = { a = 3, b = 2, c = 2 }
      local function settled()
        for name, n in pairs(want) do
          local s = t:request(name, "stats", nil, { timeout = 2 })
          if not s or s.node.links ~= n or s.comm.conns ~= n then return false end
        end
        return true
      end
      assert(helpers.wait_until(settled, 5), "links never settled to one per pair")
      comm.sleep(0.3)
      assert.is_true(settled(), "a duplicate link came back")
      for _, name in ipairs{ "b", "c" } do
        local peers = assert(t:request(name, "peers", nil, { timeout = 2 }))
        for _, other in ipairs{ "a", "b", "c" } do
          if other ~= name then
            local p = peers[other]
            assert.are.equal("up", p.state)
            assert.are.equal(cl.addr[other], p.addr)
            assert.is_number(p.rtt)
          end
        end
      end
    end)
    -- and no node reported a flap while the duplicates were sorted out
    for _, name in ipairs{ "a", "b", "c" } do
      for _, other in ipairs{ "a", "b", "c" } do
        assert.are.equal(0, cl:count(name, "down " .. other), name .. " reported " .. other .. " down")
        if other ~= name then assert.are.equal(1, cl:count(name, "up " .. other), name .. " flapped") end
      end
    end
  end)

  it("shapes n:peers() as the contract says", function()
    with_client(function(t)
      local p = t:peers().a
      assert.are.equal("up", p.state)
      assert.are.equal(cl.addr.a, p.addr)
      assert(helpers.wait_until(function() return t:peers().a.rtt end, 2))
      assert.is_true(p.last_seen <= comm.now() and p.last_seen > comm.now() - 1)
    end)
  end)

  it("answers requests, directly and routed", function()
    with_client(function(t)
      assert.are.same({ x = 1 }, t:request("a", "echo", { x = 1 }))
      assert.are.equal("hi", t:request("c", "echo", "hi", { timeout = 2 }))
      assert.are.equal(comm.json.null, t:request("b", "note", "a request to a one-way handler"))
      -- and a node asks another on the spec's behalf
      local r = assert(t:request("b", "call", { to = "c", type = "echo", body = 42 }))
      assert.are.equal(42, r.r)
    end)
  end)

  it("reports a handler's error, a missing handler and an unknown node", function()
    with_client(function(t)
      assert.are.same({ nil, "remote error: kaput" }, { t:request("b", "fail", "kaput") })
      assert.are.same({ nil, "no handler" }, { t:request("b", "nothing here") })
      local t0 = comm.now()
      assert.are.same({ nil, "unreachable" }, { t:request("nobody", "echo", 1, { timeout = 2 }) })
      assert.are.same({ nil, "unreachable" }, { t:send("nobody", "note", 1) })
      assert.is_true(comm.now() - t0 < 0.5, "unreachable should not wait for a timeout")
    end)
  end)

  it("broadcasts to every node up, once each", function()
    with_client(function(t)
      local before = {}
      for _, n in ipairs{ "a", "b", "c" } do before[n] = cl:count(n, "note " .. t.name) end
      assert.are.equal(3, t:broadcast("note", { hello = "all" }))
      for _, n in ipairs{ "a", "b", "c" } do
        assert(cl:wait_line(n, "note " .. t.name, before[n] + 1, 5), n .. " missed the broadcast")
      end
      assert.truthy(cl:stdout("c"):find('note ' .. t.name .. ' {"hello":"all"}', 1, true))
      -- a node's own broadcast reaches the other two and t, and nobody twice
      local from_b = { a = cl:count("a", "note b"), c = cl:count("c", "note b") }
      assert.are.equal(3, t:request("b", "bcast", { type = "note", body = "from b" }))
      assert(cl:wait_line("a", "note b", from_b.a + 1, 5))
      assert(cl:wait_line("c", "note b", from_b.c + 1, 5))
      assert(helpers.wait_until(function() return t:stats().no_handler == 1 end, 5))
      comm.sleep(0.1)
      for _, n in ipairs{ "a", "b", "c" } do assert.are.equal(before[n] + 1, cl:count(n, "note " .. t.name)) end
      assert.are.equal(from_b.a + 1, cl:count("a", "note b"))
      assert.are.equal(0, cl:count("b", "note b"))
    end)
  end)

  it("sends one-way messages", function()
    with_client(function(t)
      local before = cl:count("c", "note " .. t.name)
      assert.is_true(t:send("c", "note", "one way"))
      assert(cl:wait_line("c", "note " .. t.name, before + 1, 5))
    end)
  end)

  it("gives up after the per-try timeout and never hands the late reply to the next request", function()
    with_client(function(t)
      local t0 = comm.now()
      local r, err = t:request("b", "sleep", { s = 0.5, v = "late" }, { timeout = 0.2 })
      assert.is_nil(r)
      assert.are.equal("timeout", err)
      assert.is_near(0.2, comm.now() - t0, 0.1)
      -- the next request is answered by its own reply, not by the late one
      assert.are.equal("second", t:request("b", "sleep", { s = 0.4, v = "second" }, { timeout = 2 }))
      assert.are.equal(1, t:stats().late_replies)
      assert.are.equal(1, t:stats().timeouts)
    end)
  end)

  it("tells a handler its deadline, in its own clock, shrinking on the way", function()
    with_client(function(t)
      local d = assert(t:request("a", "deadline", nil, { timeout = 1.5 }))
      assert.is_true(d.left > 1.3 and d.left <= 1.5, "left: " .. d.left)
      assert.are.equal(0, d.hops)
      local routed = assert(t:request("c", "deadline", nil, { timeout = 1.5 }))
      assert.are.equal(1, routed.hops)
      assert.is_true(routed.left > 1.3 and routed.left < 1.5, "left: " .. routed.left)
    end)
  end)
end)
