-- Fair scheduling: a task whose calls never have to wait (frames already
-- buffered, values already queued, room under the high-water mark) still
-- gives the other ready tasks a turn after a bounded number of calls.
local comm = require "luacomm"
local helpers = require "helpers"

-- Runs busy() while another task counts its own turns; how many turns it
-- got while busy() ran.
local function turns_during(busy)
  local turns, stop = 0, false
  local other = comm.spawn(function()
    while not stop do turns = turns + 1; comm.yield() end
  end)
  comm.yield()
  local before = turns
  busy()
  local during = turns - before
  stop = true
  other:join(5)
  return during
end

describe("fair scheduling", function()
  it("a task reading 1000 buffered frames lets another ready task run meanwhile", function()
    helpers.run(function()
      local c, s, l = helpers.pair()
      local bytes = 0
      for i = 1, 1000 do
        local f = "frame " .. i
        assert(c:send(f))
        bytes = bytes + 4 + #f
      end
      assert(helpers.wait_until(function() return s:stats().pending_in >= bytes end, 5), "frames not buffered")
      local during = turns_during(function()
        for i = 1, 1000 do assert.are.equal("frame " .. i, s:recv(5)) end
      end)
      assert.is_true(during >= 1000 // 256, "the other task ran " .. during .. " time(s) during 1000 reads")
      helpers.close_all(c, s, l)
    end)
  end)

  it("a task sending 1000 frames under the high-water mark lets another run", function()
    helpers.run(function()
      local c, s, l = helpers.pair()
      local reader = comm.spawn(function() for _ = 1, 1000 do assert(s:recv(5)) end end)
      local during = turns_during(function()
        for i = 1, 1000 do assert(c:send("frame " .. i)) end
      end)
      assert.is_true(during >= 1000 // 256, "the other task ran " .. during .. " time(s) during 1000 sends")
      assert.is_true((reader:join(5)))
      helpers.close_all(c, s, l)
    end)
  end)

  it("a task taking 1000 queued values from a channel lets another run", function()
    helpers.run(function()
      local ch = comm.channel()
      for i = 1, 1000 do ch:put(i) end
      local during = turns_during(function()
        for i = 1, 1000 do assert.are.equal(i, ch:get()) end
      end)
      assert.is_true(during >= 1000 // 256, "the other task ran " .. during .. " time(s) during 1000 gets")
    end)
  end)
end)
