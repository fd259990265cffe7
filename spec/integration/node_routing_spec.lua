-- Routing between real processes: a chain a - b - c - d in which each node
-- dials only its neighbour, so a and d learn of each other only from what
-- the nodes announce about their links. The spec joins at a as node "t".
local comm = require "luacomm"
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"
local node = require "luacomm.node"

describe("node routing", function()
  local cl

  setup(function()
    cl = cluster.start({
      { name = "a" },
      { name = "b", peers = { "a" } },
      { name = "c", peers = { "b" } },
      { name = "d", peers = { "c" } },
    }, { heartbeat = 0.1, timeout = 0.5, max_hops = 3, reconnect = { min = 0.05, max = 0.2 } },
    { { "d", "up c" }, { "a", "up b" } })
  end)

  teardown(function() cl:stop_clean() end)

  local function with_client(fn) cl:with_client({ "a" }, fn, { listen = "127.0.0.1:0" }) end

  -- Waits until `from` (asked through t) has a route to dst, or none.
  local function wait_route(t, from, dst, present)
    return helpers.wait_until(function()
      local r = t:request(from, "routes", nil, { timeout = 1 })
      return r and ((r[dst] ~= nil) == present) and (r[dst] or true)
    end, 10, 0.05)
  end

  it("finds the shortest path along the chain and carries requests and replies across it", function()
    with_client(function(t)
      local r = assert(wait_route(t, "a", "d", true))
      assert.are.same({ via = "b", hops = 3 }, r)
      assert(helpers.wait_until(function() return t:routes().d end, 5))
      assert.are.same({ via = "a", hops = 4 }, t:routes().d)
      -- t -> a -> b -> c -> d and back: relayed by a, b and c
      local d = assert(t:request("d", "deadline", nil, { timeout = 2 }))
      assert.are.equal(3, d.hops)
      assert.is_true(d.left > 1.5 and d.left < 2)
      -- and from the far end: d asks t
      t:on("ping", function(body, msg) return { body = body, from = msg.from, hops = msg.hops } end)
      local back = assert(t:request("d", "call", { to = t.name, type = "ping", body = "pong?" }))
      assert.are.same({ body = "pong?", from = "d", hops = 3 }, back.r)
    end)
  end)

  it("broadcasts to every node of the chain", function()
    with_client(function(t)
      assert(wait_route(t, "a", "d", true))
      assert(helpers.wait_until(function() return t:routes().d end, 5))
      assert.are.equal(4, t:broadcast("note", "along the chain"))
      for _, n in ipairs{ "a", "b", "c", "d" } do assert(cl:wait_line(n, "note " .. t.name)) end
      comm.sleep(0.1)
      for _, n in ipairs{ "a", "b", "c", "d" } do assert.are.equal(1, cl:count(n, "note " .. t.name)) end
    end)
  end)

  it("stops a message at the hop limit and answers unreachable", function()
    with_client(function(t, serial)
      assert(helpers.wait_until(function() return t:routes().d end, 5))
      -- u -> t -> a -> b -> c -> d: c would be the 4th relay, over max_hops = 3
      local u = node.new{ name = "u" .. serial, peers = { t.listen_addr }, heartbeat = 0.1, timeout = 1,
                          log = { info = function() end, debug = function() end, warn = comm.log.warn } }
      assert(u:start())
      assert(helpers.wait_until(function() return u:routes().d end, 5))
      assert.are.equal("c-side", u:request("c", "echo", "c-side", { timeout = 2 }))
      local t0 = comm.now()
      assert.are.same({ nil, "unreachable" }, { u:request("d", "echo", "too far", { timeout = 2 }) })
      assert.is_true(comm.now() - t0 < 1, "the relay should answer, not let it time out")
      local s = assert(t:request("c", "stats"))
      assert.are.equal(1, s.node.hop_limit)
      u:stop()
    end)
  end)

  it("drops routes through a killed node and finds them again when it returns", function()
    with_client(function(t)
      assert(wait_route(t, "a", "d", true))
      cl:signal("c", "KILL")
      assert(wait_route(t, "a", "d", false), "a kept a route to d through the dead c")
      assert(helpers.wait_until(function() return t:routes().d == nil end, 5))
      local t0 = comm.now()
      assert.are.same({ nil, "unreachable" }, { t:request("d", "echo", 1, { timeout = 2 }) })
      assert.is_true(comm.now() - t0 < 0.5)
      assert(cl:wait_line("d", "down c"))
      cl:restart("c")
      assert(wait_route(t, "a", "d", true))
      assert(helpers.wait_until(function() return t:routes().d end, 5))
      assert.are.equal("again", t:request("d", "echo", "again", { timeout = 2 }))
      -- a request that waits for the route to come back, with retries
      cl:signal("c", "KILL")
      assert(helpers.wait_until(function() return t:routes().d == nil end, 5))
      local task = comm.spawn(function()
        return t:request("d", "echo", "patient", { timeout = 0.5, retries = 20 })
      end)
      cl:restart("c")
      assert.are.same({ true, "patient" }, { task:join(10) })
    end)
  end)
end)
