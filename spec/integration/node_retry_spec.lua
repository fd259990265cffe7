-- Retries and receiver-side dedup, with luacomm.testing.proxy between the spec's
-- node "t" and a real node process "b": the proxy loses replies on purpose,
-- and the handler must still run once per request.
local comm = require "luacomm"
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"
local proxy = require "luacomm.testing.proxy"
local node = require "luacomm.node"

local quiet = { debug = function() end, info = function() end, warn = comm.log.warn, error = comm.log.error }

describe("node retries", function()
  local cl, serial = nil, 0

  setup(function()
    cl = cluster.start({ { name = "b" } }, { heartbeat = 0.1, timeout = 1 })
  end)

  teardown(function() cl:stop_clean() end)

  -- fn(t, p, b_stats): t reaches b only through the proxy p, whose rules
  -- touch only "work" replies, so t can still ask b for its counters.
  local function through_proxy(fn)
    helpers.run(function()
      serial = serial + 1
      local p = proxy.new{ upstream = cl.addr.b }
      local paddr = assert(p:start())
      local t = node.new{ name = "t" .. serial, peers = { paddr }, heartbeat = 0.1, timeout = 1, log = quiet }
      assert(t:start())
      assert(helpers.wait_until(function() return (t:peers().b or {}).state == "up" end, 5))
      local function b_stats() return assert(t:request("b", "stats")).node end
      local ok, err = pcall(fn, t, p, b_stats)
      t:stop()
      p:stop()
      if not ok then error(err, 0) end
    end)
  end

  it("retries a request whose reply was lost, and the handler runs once", function()
    through_proxy(function(t, p, b_stats)
      local runs0, dups0 = t:request("b", "count"), b_stats().dup_requests
      local drop = p:rule{ dir = "down", match = { kind = "rep", type = "work" }, action = "drop", count = 1 }
      local t0 = comm.now()
      local r, err = t:request("b", "work", { v = "x" }, { timeout = 0.3, retries = 2 })
      assert.is_nil(err)
      assert.are.equal(1, drop.hits)
      assert.are.equal("x", r.v)
      assert.are.equal(runs0 + 1, r.n)                   -- the first run's reply, sent again
      assert.are.equal(runs0 + 1, t:request("b", "count")) -- and no second run
      assert.are.equal(dups0 + 1, b_stats().dup_requests)
      assert.are.equal(1, t:stats().retries)
      assert.is_true(comm.now() - t0 >= 0.3)
    end)
  end)

  it("does not run a handler again for a retry that arrives while it still runs", function()
    through_proxy(function(t, _, b_stats)
      local runs0, dups0 = t:request("b", "count"), b_stats().dup_requests
      local r = assert(t:request("b", "work", { delay = 0.7, v = "slow" }, { timeout = 0.15, retries = 8 }))
      assert.are.equal("slow", r.v)
      assert.are.equal(runs0 + 1, t:request("b", "count"))
      assert.is_true(b_stats().dup_requests >= dups0 + 2)
    end)
  end)

  it("gives up with timeout when every reply is lost, having run the handler once", function()
    through_proxy(function(t, p, b_stats)
      local runs0, dups0 = t:request("b", "count"), b_stats().dup_requests
      local drop = p:rule{ dir = "down", match = { kind = "rep", type = "work" }, action = "drop" }
      assert.are.same({ nil, "timeout" }, { t:request("b", "work", nil, { timeout = 0.15, retries = 2 }) })
      assert.are.equal(3, drop.hits)
      assert.are.equal(runs0 + 1, t:request("b", "count"))
      assert.are.equal(dups0 + 2, b_stats().dup_requests)
    end)
  end)

  it("does not retry an error the next try would get again", function()
    through_proxy(function(t)
      local t0 = comm.now()
      assert.are.same({ nil, "remote error: no" }, { t:request("b", "fail", "no", { retries = 3 }) })
      assert.are.same({ nil, "no handler" }, { t:request("b", "absent", nil, { retries = 3 }) })
      assert.are.equal(0, t:stats().retries)
      assert.is_true(comm.now() - t0 < 0.5)
    end)
  end)

  it("survives the link being cut under a request, retrying over the new link", function()
    through_proxy(function(t, p)
      local runs0 = t:request("b", "count")
      -- the request reaches b; the proxy then cuts the link before the reply
      p:rule{ dir = "down", match = { kind = "rep", type = "work" }, action = "close", count = 1 }
      local r = assert(t:request("b", "work", { v = "cut" }, { timeout = 0.5, retries = 10 }))
      assert.are.equal("cut", r.v)
      assert.are.equal(runs0 + 1, r.n)
      assert.are.equal(runs0 + 1, t:request("b", "count"))
    end)
  end)
end)
