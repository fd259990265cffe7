-- CONTRACT §2 "Tasks and time": spawn/join/cancel, yield, clocks, task
-- errors, misuse of blocking calls, comm.run. In-process on stock lua5.4;
-- what must be seen in the log runs in a child lua5.4 whose stderr we read.
-- The "tasks" specs run on the real module and on the simulated one
-- (spec/backends.lua), but for what needs the wall clock, a child
-- process or the real garbage-collected handles.
local comm = require "luacomm"
local core = require "luacomm.core"
local helpers = require "helpers"
local backends = require "backends"
-- bodies take the module under test as their own `comm` (and `host`)
-- luacheck: ignore 412 421 423 431 432 433 212/host

local run_lua = helpers.run_lua

for _, b in ipairs(backends) do
local it_real = b.name == "luacomm" and it or function() end
describe("tasks on " .. b.name, function()
  it("spawn passes arguments and join returns every result", function()
    b.run(function(comm, host)
      local t = comm.spawn(function(a, b) return a + b, "x", nil, a end, 1, 2)
      local r = table.pack(t:join())
      assert.are.same({ n = 5, true, 3, "x", nil, 1 }, r)
      assert.are.equal("done", t:status())
      -- joining a finished task again gives the same outcome
      assert.are.same({ n = 5, true, 3, "x", nil, 1 }, table.pack(t:join()))
    end)
  end)

  it("join of a failed task returns false and its error", function()
    b.run(function(comm, host)
      local t = comm.spawn(function() comm.sleep(0.001); error("boom") end)
      local ok, err = t:join(5)
      assert.is_false(ok)
      assert.matches("tasks_spec.lua:%d+: boom$", err)
      assert.are.equal("failed", t:status())
    end)
  end)

  it("join with a timeout gives false, \"timeout\" and leaves the task running", function()
    b.run(function(comm, host)
      local t = comm.spawn(function() comm.sleep(0.2); return "late" end)
      local t0 = comm.now()
      assert.are.same({ false, "timeout" }, { t:join(0.02) })
      assert.is_true(comm.now() - t0 >= 0.02)
      assert.are.same({ false, "timeout" }, { t:join(0) })
      assert.are.same({ true, "late" }, { t:join(5) })
    end)
  end)

  it("cancel: the joiner gets false, \"cancelled\" and the task never resumes", function()
    b.run(function(comm, host)
      local after_sleep = false
      local t = comm.spawn(function() comm.sleep(0.02); after_sleep = true end)
      local joiner = comm.spawn(function() return t:join() end)
      comm.yield() -- both are now parked
      assert.are.equal("waiting", t:status())
      t:cancel()
      assert.are.equal("cancelled", t:status())
      assert.are.same({ true, false, "cancelled" }, { joiner:join(5) })
      assert.are.same({ false, "cancelled" }, { t:join() })
      comm.sleep(0.06) -- three times the sleep it would have woken from
      assert.is_false(after_sleep)
      t:cancel() -- idempotent
    end)
  end)

  it("a task that cancels itself stops at once", function()
    b.run(function(comm, host)
      local reached = false
      local t
      t = comm.spawn(function() t:cancel(); reached = true end)
      assert.are.same({ false, "cancelled" }, { t:join(5) })
      assert.is_false(reached)
    end)
  end)

  it("cancel closes the task's pending <close> variables at once", function()
    b.run(function(comm, host)
      local closed = {}
      local function closer(name)
        return setmetatable({}, { __close = function() closed[#closed + 1] = name end })
      end
      local waiting = comm.spawn(function()
        local _ <close> = closer("waiting")
        comm.sleep(60)
      end)
      local itself = comm.spawn(function()
        local _ <close> = closer("itself")
        comm.running():cancel()
      end)
      comm.sleep(0.01)
      waiting:cancel()
      assert.are.same({ "itself", "waiting" }, closed)
      assert.are.same({ false, "cancelled" }, { itself:join() })
    end)
  end)

  it("a cancelled serve handler's connection is closed, so the peer sees \"closed\"", function()
    b.run(function(comm, host)
      local handler_task
      local l = comm.serve(host .. ":0", function(conn)
        handler_task = comm.running()
        conn:recv()
      end)
      local host, port = l:addr()
      local c = assert(comm.connect(host .. ":" .. port))
      assert(backends.wait_until(comm, function() return handler_task end, 5))
      handler_task:cancel()
      assert.are.same({ nil, "closed" }, { c:recv(5) })
      c:close()
      l:close()
    end)
  end)

  it("yield lets the other ready tasks run, in order", function()
    b.run(function(comm, host)
      local trace = {}
      local function worker(name)
        for i = 1, 3 do
          trace[#trace + 1] = name .. i
          comm.yield()
        end
      end
      local a, b = comm.spawn(worker, "a"), comm.spawn(worker, "b")
      assert.is_true(a:join(5))
      assert.is_true(b:join(5))
      assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, trace)
    end)
  end)

  it("a task that keeps yielding does not starve timers or sockets", function()
    b.run(function(comm, host)
      local timer_fired, got = false, nil
      comm.after(0.001, function() timer_fired = true end)
      local l, addr = backends.listen(comm, host)
      local reader = comm.spawn(function()
        local c = l:accept(5)
        got = c:recv(5)
        c:close()
      end)
      local c = assert(comm.connect(addr))
      assert.is_true(c:send("polled"))
      -- A busy poller: only comm.yield between checks, never a sleep.
      local spins, t0 = 0, comm.now()
      while not (timer_fired and got) and comm.now() - t0 < 2 do
        spins = spins + 1
        comm.yield()
      end
      assert.is_true(timer_fired)
      assert.are.equal("polled", got)
      assert.is_true(reader:join(5))
      c:close()
      l:close()
    end)
  end)

  it_real("now is monotonic and sleep waits at least its time; time is the wall clock", function()
    b.run(function(comm, host)
      local prev = comm.now()
      assert.are.equal("float", math.type(prev))
      for _ = 1, 1000 do
        local n = comm.now()
        assert.is_true(n >= prev)
        prev = n
      end
      local t0 = comm.now()
      comm.sleep(0.05)
      assert.is_true(comm.now() - t0 >= 0.05)
      assert.are.equal("float", math.type(comm.time()))
      assert.is_true(math.abs(comm.time() - os.time()) < 2)
    end)
  end)

  it("an error in a task is counted and does not stop the other tasks", function()
    b.run(function(comm, host)
      local before = comm.stats().task_errors
      local ticks = 0
      local ticker = comm.spawn(function()
        for _ = 1, 5 do comm.sleep(0.005); ticks = ticks + 1 end
        return ticks
      end)
      local bad = comm.spawn(function() comm.sleep(0.005); error("task error on purpose") end)
      assert.is_false((bad:join(5)))
      assert.are.same({ true, 5 }, { ticker:join(5) })
      assert.are.equal(before + 1, comm.stats().task_errors)
    end)
  end)

  it_real("an error in a task is logged with its traceback and the process goes on", function()
    local st, out, err = run_lua([[
      local comm = require "luacomm"
      comm.run(function()
        local function inner() error("kaput") end
        comm.spawn(function() comm.sleep(0.001); inner() end)
        comm.sleep(0.05)
        print("still here", comm.stats().task_errors)
      end)
    ]])
    assert.are.equal(0, st)
    assert.are.equal("still here\t1\n", out)
    assert.matches("%[error%] task failed: [^\n]*: kaput\nstack traceback:\n", err)
    assert.matches("in [^\n]*inner", err)
  end)

  it_real("a blocking call outside a task raises a clear message", function()
    local ok, err = pcall(comm.sleep, 0)
    assert.is_false(ok)
    assert.matches("outside a task", err)
    ok, err = pcall(comm.yield)
    assert.is_false(ok)
    assert.matches("outside a task", err)
    -- and it did not leave anything behind that the next run would trip on
    assert.are.equal(7, comm.run(function() comm.sleep(0); return 7 end))
  end)

  it("a blocking call from a nested coroutine.wrap raises", function()
    b.run(function(comm, host)
      local ok, err = pcall(coroutine.wrap(function() comm.sleep(0.001) end))
      assert.is_false(ok)
      assert.matches("nested coroutine", err)
      ok, err = pcall(coroutine.wrap(function() comm.yield() end))
      assert.is_false(ok)
      assert.matches("nested coroutine", err)
      -- the task itself still blocks normally afterwards
      comm.sleep(0.001)
    end)
  end)

  it("a blocking call across a C-call boundary raises", function()
    b.run(function(comm, host)
      local ok, err = pcall(table.sort, { 3, 2, 1 }, function(a, b) comm.sleep(0); return a < b end)
      assert.is_false(ok)
      assert.matches("C%-call boundary", err)
    end)
  end)

  it("blocking inside pcall inside a task works", function()
    b.run(function(comm, host)
      local t0 = comm.now()
      assert.are.same({ true, "slept" }, { pcall(function() comm.sleep(0.01); return "slept" end) })
      assert.is_true(comm.now() - t0 >= 0.01)
      local ok, err = pcall(function() comm.sleep(0.001); error("after block", 0) end)
      assert.are.same({ false, "after block" }, { ok, err })
    end)
  end)

  it("a plain coroutine.yield in a task acts like comm.yield", function()
    b.run(function(comm, host)
      local trace = {}
      local t = comm.spawn(function() trace[#trace + 1] = "b" end)
      coroutine.yield()
      trace[#trace + 1] = "a"
      assert.is_true(t:join(5))
      assert.are.same({ "b", "a" }, trace)
    end)
  end)

  it("running returns the current task inside one and nil outside", function()
    assert.is_nil(b.module().running())
    b.run(function(comm, host)
      local t
      t = comm.spawn(function() return comm.running() == t end)
      assert.are.same({ true, true }, { t:join(5) })
      assert.are.equal("luacomm.task", (tostring(comm.running()):match("^luacomm%.task")))
      assert.is_nil(coroutine.wrap(function() return comm.running() end)())
    end)
  end)

  it("a task cannot join itself", function()
    b.run(function(comm, host)
      local t
      t = comm.spawn(function() return t:join() end)
      local ok, err = t:join(5)
      assert.is_false(ok)
      assert.matches("cannot join itself", err)
    end)
  end)

  it_real("collectgarbage while tasks wait on sockets breaks nothing", function()
    b.run(function(comm, host)
      local listeners_before = comm.stats().listeners
      local l, addr = backends.listen(comm, host)
      local got = comm.channel()
      -- Listener and connections referenced only by their own (parked)
      -- tasks' stacks.
      for _ = 1, 5 do
        comm.spawn(function(listener)
          local c = listener:accept(5)
          got:put(c:recv(5))
          c:close()
        end, l)
      end
      l = nil -- luacheck: ignore (drop the last reference before collecting)
      local clients = {}
      for i = 1, 5 do clients[i] = assert(comm.connect(addr)) end
      comm.sleep(0.01)
      for _ = 1, 3 do collectgarbage("collect") end
      comm.sleep(0.01)
      for i = 1, 5 do assert.is_true(clients[i]:send("after gc " .. i)) end
      local seen = {}
      for _ = 1, 5 do seen[#seen + 1] = assert(got:get(5)) end
      table.sort(seen)
      assert.are.same({ "after gc 1", "after gc 2", "after gc 3", "after gc 4", "after gc 5" }, seen)
      for i = 1, 5 do clients[i]:close() end
      -- the listener's last reference died with its tasks: __gc closes it
      assert.truthy(backends.wait_until(comm, function()
        collectgarbage("collect")
        return comm.stats().listeners == listeners_before
      end, 5))
    end)
  end)

  it("collectgarbage while a joiner and a sleeper wait keeps both", function()
    b.run(function(comm, host)
      local slept = comm.spawn(function() comm.sleep(0.02); return "slept" end)
      local joined = comm.spawn(function(t) return t:join() end, slept)
      slept = nil -- luacheck: ignore (drop the last reference before collecting)
      comm.yield()
      collectgarbage("collect")
      collectgarbage("collect")
      assert.are.same({ true, true, "slept" }, { joined:join(5) })
    end)
  end)
end)
end

describe("comm.run", function()
  it("returns the task's results", function()
    assert.are.same({ n = 3, 1, nil, "three" }, table.pack(comm.run(function(a, b) return a, nil, b end, 1, "three")))
  end)

  it("re-raises the task's error with a traceback", function()
    local ok, err = pcall(comm.run, function()
      comm.sleep(0.001)
      local function deep() error("failed in run") end
      deep()
    end)
    assert.is_false(ok)
    assert.matches("^[^\n]*tasks_spec.lua:%d+: failed in run\nstack traceback:\n", err)
    assert.matches("in [^\n]*deep", err)
  end)

  it("does not count or log the error it re-raises", function()
    local before = comm.stats().task_errors
    pcall(comm.run, function() error("re-raised, not logged") end)
    assert.are.equal(before, comm.stats().task_errors)
  end)

  it("raises when the task waits for something nothing pending can bring", function()
    -- Anything left open by an earlier spec would keep the loop busy and
    -- turn this into a hang: say so instead.
    local s = comm.stats()
    assert.are.same({ 0, 0, 0, 0 }, { s.conns, s.listeners, s.timers, s.udp })
    local ok, err = pcall(comm.run, function() comm.channel():get() end)
    assert.is_false(ok)
    assert.matches("deadlock", err)
    -- the loop is usable again afterwards
    assert.are.equal("ok", comm.run(function() comm.sleep(0.001); return "ok" end))
  end)

  it("raises when called from inside a task", function()
    helpers.run(function()
      local ok, err = pcall(comm.run, function() end)
      assert.is_false(ok)
      assert.matches("already running", err)
    end)
  end)

  it("rejects a non-function", function()
    assert.has_error(function() comm.run(42) end, "bad argument #1 to 'run' (function expected)")
  end)

  it("ends early on comm.stop()", function()
    local reached = false
    assert.are.same({ n = 0 }, table.pack(comm.run(function()
      comm.stop()
      comm.sleep(0.01)
      reached = true
    end)))
    assert.is_false(reached)
  end)
end)

describe("the spec helpers' core handle", function()
  it("is the module's own core", function()
    assert.are.equal(core, helpers.core)
  end)
end)
