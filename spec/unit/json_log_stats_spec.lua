-- CONTRACT §2 "JSON, logs and counters".
local comm = require "luacomm"
local core = require "luacomm.core"
local helpers = require "helpers"

local run_lua = helpers.run_lua

describe("json", function()
  it("round-trips tables, strings, numbers, booleans and null", function()
    local v = {
      s = "h\195\169llo \"quoted\"\n", n = 42, f = 1.5, neg = -7, t = true, fa = false,
      list = { 1, "two", { three = 3 } }, null = comm.json.null, empty = {},
    }
    local s = comm.json.encode(v)
    assert.are.equal("string", type(s))
    assert.are.same(v, comm.json.decode(s))
    assert.are.equal(comm.json.null, comm.json.decode("[null]")[1])
    assert.are.equal("[1,2,3]", comm.json.encode({ 1, 2, 3 }))
    assert.are.equal('{"k":"v"}', comm.json.encode({ k = "v" }))
    assert.are.equal("null", comm.json.encode(comm.json.null))
  end)

  it("decode of bad input returns nil, err and never raises", function()
    for _, bad in ipairs{ "{bad", "", "[1,", "nul", '{"a":}', "\0", "[1] x", '"unterminated' } do
      local ok, v, err = pcall(comm.json.decode, bad)
      assert.is_true(ok, "raised on " .. ("%q"):format(bad))
      assert.is_nil(v)
      assert.are.equal("string", type(err))
      assert.is_true(#err > 0)
      assert.is_nil(err:match("^[^:]*%.lua:%d+:"), "error carries a source position: " .. err)
    end
    for _, notstring in ipairs{ 42, true, {} } do
      local ok, v, err = pcall(comm.json.decode, notstring)
      assert.is_true(ok)
      assert.is_nil(v)
      assert.matches("expected a string", err)
    end
    local ok, v, err = pcall(comm.json.decode)
    assert.are.same({ true, nil, "expected a string, got nil" }, { ok, v, err })
  end)

  it("encode raises on a value JSON cannot hold, naming the caller", function()
    local function encode_fn()
      local s = comm.json.encode({ f = function() end }) -- not a tail call: this line is blamed
      return s
    end
    local ok, err = pcall(encode_fn)
    assert.is_false(ok)
    assert.matches("^[^\n]*json_log_stats_spec.lua:%d+: json.encode: Cannot serialise function", err)
    assert.has_error(function() comm.json.encode(0 / 0) end)
    assert.has_error(function() comm.json.encode(math.huge) end)
    local cyc = {}
    cyc.self = cyc
    assert.has_error(function() comm.json.encode(cyc) end)
  end)
end)

describe("log", function()
  local saved
  before_each(function() saved = core.log_level() end)
  after_each(function() core.log_level(saved) end)

  it("formats with string.format; without arguments the text is used as is", function()
    local st, _, err = run_lua([[
      local comm = require "luacomm"
      comm.log.level("debug")
      comm.log.debug("d %s %d", "x", 1)
      comm.log.info("i %s %d %q", "x", 1, "q")
      comm.log.warn("w %5.2f", 1.5)
      comm.log.info("no args, so 100% is not a format")
      comm.log.info(42)
      comm.log.error("%s", setmetatable({}, { __tostring = function() return "obj" end }))
    ]])
    assert.are.equal(0, st)
    local lines = {}
    for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l:gsub("^.-%[", "[") end
    assert.are.same({
      "[debug] d x 1",
      '[info] i x 1 "q"',
      "[warn] w  1.50",
      "[info] no args, so 100% is not a format",
      "[info] 42",
      "[error] obj",
    }, lines)
  end)

  it("does not format a record below the level, and a bad format raises above it", function()
    local formatted = 0
    local probe = setmetatable({}, { __tostring = function() formatted = formatted + 1; return "p" end })
    core.log_level("error")
    comm.log.debug("%s", probe)
    comm.log.info("%s", probe)
    comm.log.warn("%s", probe)
    assert.are.equal(0, formatted)
    assert.has_error(function() comm.log.error("%d", "not a number") end)
  end)

  it("core.log_level reads and sets the level; comm.log.level is the same", function()
    assert.are.equal("warn", core.log_level("warn"))
    assert.are.equal("warn", core.log_level())
    assert.are.equal("warn", comm.log.level())
    assert.are.equal("debug", comm.log.level("debug"))
    assert.are.equal("debug", core.log_level())
    assert.has_error(function() core.log_level("loud") end)
  end)

  it("writes \"[level] msg\" lines to stderr, filtered by level", function()
    local st, out, err = run_lua([[
      local comm = require "luacomm"
      local core = require "luacomm.core"
      comm.log.debug("hidden debug %d", 1)
      comm.log.info("shown info %d %s", 2, "two")
      core.log_level("warn")
      comm.log.info("hidden info")
      comm.log.warn("shown warn %q", "w")
      comm.log.error("shown error")
      core.log_level("debug")
      comm.log.debug("shown debug")
      io.write("done")
    ]])
    assert.are.equal(0, st)
    assert.are.equal("done", out)
    local lines = {}
    for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l:gsub("^.-%[", "[") end
    assert.are.same({
      "[info] shown info 2 two",
      '[warn] shown warn "w"',
      "[error] shown error",
      "[debug] shown debug",
    }, lines)
  end)
  -- Under the host the level set from Lua is the one the sink applies:
  -- there is one level, the core's, whatever --log-level said at start.
  it("comm.log.level() decides what the host writes", function()
    local st, out, err = helpers.run_host({ "--log-level", "warn", "-e", [[
      local comm = require "luacomm"
      comm.log.info("hidden info")
      print(comm.log.level("debug"))
      comm.log.debug("shown debug %d", 1)
      comm.log.info("shown info")
      comm.log.level("error")
      comm.log.warn("hidden warn")
    ]] })
    assert.are.equal(0, st)
    assert.are.equal("debug\n", out)
    local lines = {}
    for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l:gsub("^.-%[", "[") end
    assert.are.same({ "[debug] shown debug 1", "[info] shown info" }, lines)
  end)
end)

describe("stats", function()
  local fields = { "tasks", "timers", "conns", "listeners", "frames_in", "frames_out",
                   "bytes_in", "bytes_out", "reloads", "reload_failures", "task_errors" }

  it("has every contract field, as integers", function()
    local s = comm.stats()
    for _, k in ipairs(fields) do
      assert.are.equal("integer", math.type(s[k]), k)
      assert.is_true(s[k] >= 0, k)
    end
  end)

  it("counters move with the process's activity, exactly", function()
    helpers.run(function()
      -- connections earlier specs dropped are collected now, not between
      -- the two samples (a collected one leaves the count)
      collectgarbage()
      collectgarbage()
      local s0 = comm.stats()
      local l, addr = helpers.listen()
      local server = comm.spawn(function()
        local c = l:accept(5)
        local f = c:recv(5)
        c:send(f .. "!")
        c:recv(5) -- until the client closes
        c:close()
      end)
      local c = assert(comm.connect(addr))
      local t = comm.every(10, function() end)
      assert.is_true(c:send("hello"))          -- 4 + 5 bytes
      assert.are.equal("hello!", c:recv(5))    -- 4 + 6 bytes
      local s1 = comm.stats()
      assert.are.equal(s0.listeners + 1, s1.listeners)
      assert.are.equal(s0.conns + 2, s1.conns) -- both ends live in this process
      assert.are.equal(s0.timers + 1, s1.timers)
      assert.is_true(s1.tasks >= s0.tasks + 1) -- at least the server task
      assert.are.equal(s0.frames_out + 2, s1.frames_out)
      assert.are.equal(s0.frames_in + 2, s1.frames_in)
      assert.are.equal(s0.bytes_out + 19, s1.bytes_out)
      assert.are.equal(s0.bytes_in + 19, s1.bytes_in)
      c:close()
      assert.is_true(server:join(5))
      t:cancel()
      l:close()
      local s2 = comm.stats()
      assert.are.equal(s0.listeners, s2.listeners)
      assert.are.equal(s0.conns, s2.conns)
      assert.are.equal(s0.timers, s2.timers)
    end)
  end)

  it("tasks counts live tasks", function()
    helpers.run(function()
      local n0 = comm.stats().tasks
      local ch = comm.channel()
      local ts = {}
      for i = 1, 3 do ts[i] = comm.spawn(function() ch:get() end) end
      assert.are.equal(n0 + 3, comm.stats().tasks)
      ch:close()
      for i = 1, 3 do assert.is_true(ts[i]:join(5)) end
      assert.are.equal(n0, comm.stats().tasks)
    end)
  end)

  it("task_errors counts failed tasks (not cancelled ones)", function()
    helpers.run(function()
      local e0 = comm.stats().task_errors
      local ok_task = comm.spawn(function() comm.sleep(1) end)
      ok_task:cancel()
      assert.are.equal(e0, comm.stats().task_errors)
      assert.is_false((comm.spawn(error, "counted failure"):join(5)))
      assert.are.equal(e0 + 1, comm.stats().task_errors)
    end)
  end)

  it("returns a fresh table each time", function()
    local a, b = comm.stats(), comm.stats()
    assert.are_not.equal(a, b)
    a.tasks = -1
    assert.is_true(comm.stats().tasks >= 0)
  end)
end)
