-- Anti-entropy of routing news (docs/PROTOCOL.md §7) between a real node
-- process "b" and two of the spec's nodes: t reaches b only through
-- luacomm.testing.proxy, c dials b directly. The proxy loses every
-- announcement of c on its way to t — what a lost frame would do — and
-- then lets them through again: flooded once, c's news would never reach t
-- (no route to c for good); the digest in b's pings must make them agree.
local comm = require "luacomm"
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"
local proxy = require "luacomm.testing.proxy"
local node = require "luacomm.node"

local quiet = { debug = function() end, info = function() end, warn = comm.log.warn, error = comm.log.error }

describe("node anti-entropy", function()
  local cl

  setup(function()
    cl = cluster.start({ { name = "b" } }, { heartbeat = 0.1, timeout = 1 })
  end)

  teardown(function()
    cl:stop()
    cl:assert_clean()
  end)

  it("sends a lost route announcement again, so a node it left without a route gets one", function()
    helpers.run(function()
      local p = proxy.new{ upstream = cl.addr.b }
      local paddr = assert(p:start())
      local t = node.new{ name = "t", peers = { paddr }, heartbeat = 0.1, timeout = 1, log = quiet }
      local c = node.new{ name = "c", peers = { cl.addr.b }, heartbeat = 0.1, timeout = 1, log = quiet }
      c:on("hi", function() return "hi from c" end)
      local ok, err = pcall(function()
        assert(t:start())
        assert(helpers.wait_until(function() return (t:peers().b or {}).state == "up" end, 5))
        local last_lost
        local lost = p:rule{ dir = "down", action = "drop", match = function(_, env)
          if env and env.kind == "links" and env.origin == "c" then
            last_lost = env.seq
            return true
          end
          return false
        end }
        local resyncs0 = assert(t:request("b", "stats")).node.resyncs
        assert(c:start())
        -- c's links are settled, and b passed c's latest news on to t: the
        -- proxy lost it (and every earlier one)
        assert(helpers.wait_until(function() return c:routes().t and last_lost == c._seq end, 5))
        lost.count = lost.hits -- no more losses
        assert(helpers.wait_until(function() return t:routes().c end, 5), "t never got a route to c")
        assert.are.same({ via = "b", hops = 2 }, t:routes().c)
        assert.are.equal("hi from c", t:request("c", "hi", nil, { timeout = 2 }))
        assert.is_true(assert(t:request("b", "stats")).node.resyncs > resyncs0)
      end)
      c:stop()
      t:stop()
      p:stop()
      if not ok then error(err, 0) end
    end)
  end)
end)
