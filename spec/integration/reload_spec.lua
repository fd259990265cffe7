-- Services, hot reload, graceful stop and the runaway guard (CONTRACT §3–§5),
-- against the real host: real processes, real SIGHUP/SIGTERM, one TCP
-- connection kept across reloads.
local comm = require "luacomm"
local helpers = require "helpers"

-- The service under test: answers "<version>:<frame>", and a few commands.
-- `extra` is spliced in to break or extend a version.
local function service(version, extra)
  return ([[
local comm = require "luacomm"
local util = require "util"
local M = {}
function M.start(state, port_file)
  state.hits, state.ticks = 0, 0
  comm.every(0.02, function() M.tick(state) end)
  local l = assert(comm.serve("127.0.0.1:0", function(conn)
    while true do
      local f = conn:recv()
      if not f then return end
      conn:send(M.answer(state, f))
    end
  end))
  local _, port = l:addr()
  local fh = assert(io.open(port_file, "w")); fh:write(port); fh:close()
end
function M.tick(state) state.ticks = state.ticks + 1 end
function M.answer(state, f)
  state.hits = state.hits + 1
  if f == "stats" then
    local s = comm.stats()
    return ("timers=%%d listeners=%%d reloads=%%d failures=%%d"):format(s.timers, s.listeners, s.reloads, s.reload_failures)
  elseif f == "hits" then return tostring(state.hits)
  elseif f == "ticks" then return tostring(state.ticks)
  elseif f == "lib" then return tostring(comm)
  elseif f == "util" then return util.tag()
  elseif f == "spin" then comm.spawn(function() while true do end end) return "spinning"
  elseif f == "spin-pcall" then
    comm.spawn(function() while true do pcall(function() while true do end end) end end)
    return "spinning"
  end
  return %q .. ":" .. f
end
%s
return M
]]):format(version, extra or "")
end

local function util_module(tag)
  return ("local U = {}\nfunction U.tag() return %q end\nreturn U\n"):format(tag)
end

-- Starts the service in a fresh folder; returns the process, the folder, a
-- connected client, and the script's path.
local function start(args)
  local dir = helpers.tmpdir()
  local script = dir .. "/svc.lua"
  helpers.writefile(script, service("v1"))
  helpers.writefile(dir .. "/util.lua", util_module("u1"))
  local argv = { "--task-budget", "0.5" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = script
  argv[#argv + 1] = dir .. "/port"
  local p = helpers.spawn_host(argv)
  local port = assert(helpers.wait_until(function()
    local s = helpers.readfile(dir .. "/port")
    return s and tonumber(s)
  end, 10), "service did not start: " .. p:stderr())
  local conn = assert(comm.connect("127.0.0.1:" .. port))
  return p, dir, conn, script, port
end

local function ask(conn, s)
  assert(conn:send(s))
  return assert(conn:recv(5))
end

local count = helpers.count

-- Sends SIGHUP and waits for the attempt's outcome in the log.
local function reload(p, expect)
  local before = count(p:stderr(), "reload ok") + count(p:stderr(), "reload failed")
  p:signal("HUP")
  assert(helpers.wait_until(function()
    return count(p:stderr(), "reload ok") + count(p:stderr(), "reload failed") > before
  end, 10), "no reload outcome logged")
  local last = p:stderr():match(".*%[%a+%] (reload %a+)")
  assert.are.equal(expect, last)
end

-- Sends "1" .. "n" on conn, pausing `pause` s every `every` frames, while a
-- reader checks that each is answered once, in order (recv_timeout s at
-- most apart). Returns finish(timeout): waits for both, gives the count.
local function pipeline(conn, n, every, pause, recv_timeout)
  local received = 0
  local reader = comm.spawn(function()
    for i = 1, n do
      local f = assert(conn:recv(recv_timeout))
      assert.are.equal(i, tonumber(f:match(":(%d+)$")), "frame " .. i .. " answered as " .. f)
      received = received + 1
    end
  end)
  local writer = comm.spawn(function()
    for i = 1, n do
      assert(conn:send(tostring(i)))
      if i % every == 0 then comm.sleep(pause) end
    end
  end)
  return function(timeout)
    assert(writer:join(timeout))
    local ok, err = reader:join(timeout)
    assert(ok, err)
    return received
  end
end

describe("hot reload", function()
  it("swaps v1 for v2 on the same connection, keeping state and pid", function()
    helpers.run(function()
      local p, _, conn, script = start()
      finally(function() p:kill() end)
      local pid = p.pid
      assert.are.equal("v1:a", ask(conn, "a"))
      helpers.writefile(script, service("v2"))
      reload(p, "reload ok")
      assert.are.equal("v2:b", ask(conn, "b"))
      assert.are.equal("3", ask(conn, "hits"))       -- state kept across the swap
      assert.are.equal(pid, p.pid)
      assert.is_nil(p:status())
      assert.truthy(ask(conn, "stats"):match("reloads=1 failures=0"))
      helpers.assert_no_error_log(p:stderr())
    end)
  end)

  it("reloads the service's own modules but not luacomm's library", function()
    helpers.run(function()
      local p, dir, conn, script = start()
      finally(function() p:kill() end)
      local lib = ask(conn, "lib")
      assert.are.equal("u1", ask(conn, "util"))
      helpers.writefile(dir .. "/util.lua", util_module("u2"))
      helpers.writefile(script, service("v2"))
      reload(p, "reload ok")
      assert.are.equal("u2", ask(conn, "util"))
      assert.are.equal(lib, ask(conn, "lib"))       -- the same luacomm table
    end)
  end)

  it("keeps one timer and one listener after 20 reloads", function()
    helpers.run(function()
      local p, _, conn = start()
      finally(function() p:kill() end)
      for _ = 1, 20 do reload(p, "reload ok") end
      assert.truthy(ask(conn, "stats"):match("^timers=1 listeners=1 reloads=20 failures=0"))
      -- the tick rate is one timer's: ~50/s, not 21 timers' ~1000/s
      local t0, n0 = comm.now(), tonumber(ask(conn, "ticks"))
      comm.sleep(0.5)
      local rate = (tonumber(ask(conn, "ticks")) - n0) / (comm.now() - t0)
      assert.is_true(rate < 80, "tick rate " .. rate)
    end)
  end)

  local broken = {
    ["a syntax error"] = function(script) helpers.writefile(script, service("v2", "local x = = 1")) end,
    ["an error at top level"] = function(script) helpers.writefile(script, service("v2", "error('boom at top')")) end,
    ["a script that no longer returns a table"] = function(script)
      helpers.writefile(script, (service("v2"):gsub("return M\n$", "return 42\n")))
    end,
    ["an M.reload that raises"] = function(script)
      helpers.writefile(script, service("v2", "function M.reload(state) error('reload hook boom') end"))
    end,
    ["a top level that never ends (bounded by --task-budget)"] = function(script)
      helpers.writefile(script, service("v2", "while true do end"))
    end,
    ["a module with a syntax error"] = function(script, dir)
      helpers.writefile(script, service("v2"))
      helpers.writefile(dir .. "/util.lua", "local U = {\n")
    end,
  }
  for what, breakit in pairs(broken) do
    it("keeps the old code answering after " .. what, function()
      helpers.run(function()
        local p, dir, conn, script = start()
        finally(function() p:kill() end)
        assert.are.equal("v1:a", ask(conn, "a"))
        breakit(script, dir)
        reload(p, "reload failed")
        assert.are.equal("v1:b", ask(conn, "b"))
        assert.are.equal("u1", ask(conn, "util"))
        assert.truthy(ask(conn, "stats"):match("reloads=0 failures=1"))
        -- logged with file:line
        local line = p:stderr():match("[^\n]*reload failed[^\n]*")
        assert.truthy(line:match("%.lua:%d+:"), line)
      end)
    end)
  end

  it("warns and keeps running when the script is not a service", function()
    helpers.run(function()
      local dir = helpers.tmpdir()
      local p = helpers.spawn_host({ helpers.writefile(dir .. "/plain.lua",
        "local comm = require 'luacomm'\nprint('up')\ncomm.every(0.05, function() end)\n") })
      finally(function() p:kill() end)
      assert(p:wait_output("up"))
      p:signal("HUP")
      assert(p:wait_output("%[warn%][^\n]*not a service", "err"))
      assert.is_nil(p:status())
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
    end)
  end)

  it("answers every frame exactly once, in order, across 20 reloads under load", function()
    helpers.run(function()
      local p, _, conn, script = start()
      finally(function() p:kill() end)
      local n = 2000
      local finish = pipeline(conn, n, 10, 0.001, 10)
      for v = 2, 21 do
        helpers.writefile(script, service("v" .. v))
        reload(p, "reload ok")
      end
      assert.are.equal(n, finish(30))
      assert.are.equal(nil, conn:recv(0.2))          -- nothing extra
    end)
  end)
end)

describe("hot reload under a signal storm", function()
  it("200 SIGHUPs in about 2 s during 20,000 pipelined frames: each answered once, in order", function()
    helpers.run(function()
      local p, _, conn = start()
      finally(function() p:kill() end)
      local n = 20000
      local finish = pipeline(conn, n, 100, 0.01, 20)
      -- the storm runs beside the loop, so the reader and writer keep going
      assert(os.execute(("(for i in $(seq 200); do kill -HUP %d; sleep 0.01; done) >/dev/null 2>&1 &")
        :format(p.pid)))
      assert.are.equal(n, finish(60))
      assert.are.equal(nil, conn:recv(0.2))
      assert(helpers.wait_until(function() return count(p:stderr(), "reload ok") >= 1 end, 10))
      assert.are.equal(0, count(p:stderr(), "reload failed"))
      assert.are.equal("v1:after", ask(conn, "after"))
    end, 90)
  end)
end)

describe("graceful stop", function()
  it("runs M.stop, then exits 0", function()
    helpers.run(function()
      local p, _, conn, script = start()
      finally(function() p:kill() end)
      helpers.writefile(script, service("v2", "function M.stop(state) print('stop hook ran after ' .. state.hits"
                                             .. " .. ' stopping=' .. tostring(comm.stopping())) end"))
      reload(p, "reload ok")
      ask(conn, "x")
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
      assert.truthy(p:stdout():match("stop hook ran after 1 stopping=true"))
    end)
  end)

  it("logs a stop hook that raises, once, and still exits 0", function()
    helpers.run(function()
      local p, _, _, script = start()
      finally(function() p:kill() end)
      helpers.writefile(script, service("v2", "function M.stop(state) error('stop hook boom') end"))
      reload(p, "reload ok")
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
      local err = p:stderr()
      assert.truthy(err:match("%[error%] stop hook: [^\n]*svc%.lua:%d+: stop hook boom"))
      assert.is_nil(err:match("task failed"))
    end)
  end)

  it("cuts a hung stop hook at --stop-timeout and still exits 0", function()
    helpers.run(function()
      local p, _, _, script = start({ "--stop-timeout", "0.5" })
      finally(function() p:kill() end)
      helpers.writefile(script, service("v2", "function M.stop(state) comm.sleep(60) end"))
      reload(p, "reload ok")
      local t0 = comm.now()
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
      assert.is_true(comm.now() - t0 < 5)
      assert.truthy(p:stderr():match("stop hook: timeout"))
    end)
  end)
end)

describe("runaway guard", function()
  it("interrupts a task that never yields while other connections are served", function()
    helpers.run(function()
      local p, _, conn, _, port = start()
      finally(function() p:kill() end)
      assert.are.equal("spinning", ask(conn, "spin"))
      local other = assert(comm.connect("127.0.0.1:" .. port))
      assert.are.equal("v1:still here", ask(other, "still here"))
      assert(p:wait_output("without yielding", "err"))
      assert.are.equal("v1:after", ask(conn, "after"))
    end)
  end)

  it("interrupts a task that swallows the interruption with pcall and spins on", function()
    helpers.run(function()
      local p, _, conn = start()
      finally(function() p:kill() end)
      assert.are.equal("spinning", ask(conn, "spin-pcall"))
      assert(p:wait_output("task failed: .*without yielding", "err"))
      assert.are.equal("v1:after", ask(conn, "after"))
      assert.are.equal(1, count(p:stderr(), "task failed"))
    end)
  end)
end)
