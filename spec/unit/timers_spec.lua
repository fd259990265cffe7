-- CONTRACT §2: comm.after / comm.every / timer:cancel. Callbacks run in
-- tasks of their own, so they may block; an error in an `every` callback is
-- logged and counted and the timer keeps firing.
--
-- Run on the real module and on the simulated one (spec/backends.lua);
-- what needs a busy loop on the wall clock or a child process runs on the
-- real one only.
local helpers = require "helpers"
local backends = require "backends"

local run_lua = helpers.run_lua

for _, b in ipairs(backends) do
local real = b.name == "luacomm"
local it_real = real and it or function() end
describe("timers on " .. b.name, function()
  it("after fires once, with its arguments, in a task of its own", function()
    b.run(function(comm)
      local calls, args, in_task = 0, nil, nil
      local timers = comm.stats().timers
      local t0 = comm.now()
      local fired_at
      local t = comm.after(0.02, function(...)
        calls = calls + 1
        args = table.pack(...)
        in_task = comm.running() ~= nil
        fired_at = comm.now()
      end, "a", nil, 3)
      assert.are.equal(timers + 1, comm.stats().timers)
      assert.truthy(backends.wait_until(comm, function() return calls == 1 end, 5, 0.005))
      -- never early as comm.now() measures it
      assert.is_true(fired_at - t0 >= 0.02, ("fired after %.6f s"):format(fired_at - t0))
      assert.are.same({ n = 3, "a", nil, 3 }, args)
      assert.is_true(in_task)
      assert.is_false(t:active())
      assert.are.equal(timers, comm.stats().timers)
      comm.sleep(0.06) -- three times its delay: it must not come back
      assert.are.equal(1, calls)
    end)
  end)

  it("after(0) fires on the next turn of the loop", function()
    b.run(function(comm)
      local fired = false
      comm.after(0, function() fired = true end)
      assert.is_false(fired)
      assert.truthy(backends.wait_until(comm, function() return fired end, 5, 0.001))
    end)
  end)

  it("every keeps firing until cancelled, then stops", function()
    b.run(function(comm)
      local timers = comm.stats().timers
      local n = 0
      local fifth = comm.channel()
      local t = comm.every(0.005, function()
        n = n + 1
        if n == 5 then fifth:put(true) end
      end)
      assert.is_true(t:active())
      assert.is_true(fifth:get(5))
      t:cancel()
      assert.is_false(t:active())
      assert.are.equal(timers, comm.stats().timers)
      local seen = n
      comm.sleep(0.03) -- six intervals
      assert.are.equal(seen, n)
      t:cancel() -- idempotent
    end)
  end)

  it("cancel before the first firing means it never fires", function()
    b.run(function(comm)
      local fired = false
      local t = comm.after(0.01, function() fired = true end)
      t:cancel()
      comm.sleep(0.04)
      assert.is_false(fired)
    end)
  end)

  it_real("cancel drops a firing whose callback has not started yet", function()
    b.run(function(comm)
      -- The timer fires while this task is still busy in the same pass: its
      -- callback's task is queued behind us, and cancel must drop it.
      local fired = false
      local t = comm.after(0, function() fired = true end)
      local t0 = comm.now()
      while comm.now() - t0 < 0.005 do end -- let it expire without yielding
      comm.yield() -- the loop looks at timers: the firing is queued behind us
      t:cancel()
      comm.sleep(0.01)
      assert.is_false(fired)
    end)
  end)

  it_real("sleep-based timeouts and timers are never early, even late in a busy pass", function()
    b.run(function(comm)
      for _ = 1, 5 do
        local busy = comm.now()
        while comm.now() - busy < 0.003 do end -- the pass has run for 3 ms
        local t0 = comm.now()
        local fired = comm.channel()
        comm.after(0.004, function() fired:put(comm.now()) end)
        comm.sleep(0.004)
        assert.is_true(comm.now() - t0 >= 0.004)
        assert.is_true(assert(fired:get(5)) - t0 >= 0.004)
      end
    end)
  end)

  it("a callback may cancel its own timer", function()
    b.run(function(comm)
      local n = 0
      local t
      t = comm.every(0.005, function()
        n = n + 1
        if n == 3 then t:cancel() end
      end)
      assert.truthy(backends.wait_until(comm, function() return not t:active() end, 5, 0.005))
      comm.sleep(0.03)
      assert.are.equal(3, n)
    end)
  end)

  it("an error in an every callback is counted and the timer keeps firing", function()
    b.run(function(comm)
      local before = comm.stats().task_errors
      local n = 0
      local third = comm.channel()
      local t = comm.every(0.005, function()
        n = n + 1
        if n == 3 then third:put(true) end
        error("timer error on purpose " .. n)
      end)
      assert.is_true(third:get(5))
      t:cancel()
      comm.sleep(0.03) -- six intervals: no callback starts after cancel
      assert.are.equal(3, n)
      assert.are.equal(before + 3, comm.stats().task_errors)
    end)
  end)

  it_real("an error in an every callback is logged with its traceback", function()
    local st, out, err = run_lua([[
      local comm = require "luacomm"
      comm.run(function()
        local n, third = 0, comm.channel()
        local t = comm.every(0.005, function()
          n = n + 1
          if n == 3 then third:put(true) end
          error("tick " .. n)
        end)
        third:get()
        t:cancel()
        comm.sleep(0.02)
        print(n, comm.stats().task_errors)
      end)
    ]])
    assert.are.equal(0, st)
    assert.are.equal("3\t3\n", out)
    for i = 1, 3 do
      assert.matches("%[error%] task failed: [^\n]*: tick " .. i .. "\nstack traceback:", err)
    end
  end)

  it("callbacks may block", function()
    b.run(function(comm)
      local done = comm.channel()
      local t0 = comm.now()
      comm.after(0.005, function()
        comm.sleep(0.02)
        done:put(comm.now() - t0)
      end)
      local waited = assert(done:get(5))
      assert.is_true(waited >= 0.025)
    end)
  end)

  it("a blocking every callback does not hold up the next firing", function()
    b.run(function(comm)
      local started = 0
      local t = comm.every(0.005, function()
        started = started + 1
        comm.sleep(0.05)
      end)
      -- several firings start while the first still sleeps
      assert.truthy(backends.wait_until(comm, function() return started >= 3 end, 0.04, 0.002))
      t:cancel()
    end)
  end)

  it("rejects bad arguments", function()
    local comm = b.module()
    assert.has_error(function() comm.after(-1, function() end) end)
    assert.has_error(function() comm.after(0 / 0, function() end) end)
    assert.has_error(function() comm.every(0, function() end) end)
    assert.has_error(function() comm.after(1, "not a function") end)
  end)
  it_real("core.shutdown(\"all\") disarms timers and drops them from the counters", function()
    b.run(function(comm)
      local core = require "luacomm.core"
      local fired = 0
      local t = comm.every(0.01, function() fired = fired + 1 end)
      assert.is_true(t:active())
      assert.is_true(comm.stats().timers >= 1)
      core.shutdown("all")
      assert.is_false(t:active())
      assert.are.equal(0, comm.stats().timers)
      local n = fired
      comm.sleep(0.05)
      assert.are.equal(n, fired)
    end)
  end)
end)
end
