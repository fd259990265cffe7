-- examples/pubsub/broker.lua as a user runs it: a subscriber that never
-- reads must not hold up the others, and the broker needs no writer task
-- per subscriber.
local comm = require "luacomm"
local helpers = require "helpers"

describe("examples/pubsub", function()
  it("delivers everything to a fast subscriber while a slow one is dropped from", function()
    helpers.run(function()
      local port = helpers.free_port()
      local p = helpers.spawn_host({ "examples/pubsub/broker.lua", tostring(port) })
      local ok, err = pcall(function()
        assert.truthy(p:wait_output("pubsub broker listening on 127%.0%.0%.1:" .. port, "err"))
        local addr = "127.0.0.1:" .. port
        local fast = assert(comm.connect(addr))
        local slow = assert(comm.connect(addr))
        fast:send("SUB news")
        slow:send("SUB news")
        local pub = assert(comm.connect(addr))
        local function stats()
          pub:send("STATS")
          return comm.json.decode(assert(pub:recv(5)))
        end
        assert.truthy(helpers.wait_until(function() return stats().subscribers == 2 end, 5))
        -- 1000 publications of 16 KiB: 16 MiB, far more than the slow
        -- subscriber's socket buffers and high-water mark hold
        local payload = string.rep("p", 16 * 1024)
        local N = 1000
        -- the fast subscriber acknowledges each frame to the publisher,
        -- which keeps at most 4 ahead of it: it never falls behind
        local acks = comm.channel()
        local reader = comm.spawn(function()
          for i = 1, N do
            local f = assert(fast:recv(10))
            -- (not assert.are.equal: a failure would print 16 KiB)
            assert(f == "news " .. i .. " " .. payload, "fast subscriber: frame " .. i .. " is " .. f:sub(1, 12))
            acks:put(i)
          end
          return true
        end)
        for i = 1, N do
          assert(pub:send("PUB news " .. i .. " " .. payload))
          if i > 4 then assert(acks:get(10)) end
        end
        assert.is_true((reader:join(30)))
        local s = stats()
        assert.are.equal(N, s.published)
        assert.is_true(s.dropped > 0, "the slow subscriber was never dropped from")
        assert.are.equal(2 * N, s.delivered + s.dropped)
        -- accept loop + fan-out + one reader per connection (3): nothing per subscriber
        assert.is_true(s.tasks <= 5, "tasks: " .. s.tasks)
        -- the slow subscriber got some of the stream, in order, not all of it
        local got, last = 0, 0
        while true do
          local f = slow:recv(0.5)
          if not f then break end
          got = got + 1
          local i = tonumber(f:match("^news (%d+) "))
          assert(i and i > last, "slow subscriber: frame " .. got .. " is " .. f:sub(1, 12))
          last = i
        end
        assert.is_true(got > 0 and got < N, "slow subscriber got " .. got)
        helpers.close_all(fast, slow, pub)
      end)
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
      helpers.assert_no_error_log(p:stderr())
      assert(ok, err)
    end, 60)
  end)
end)
