-- The luacomm command (CONTRACT §1): arg and `...`, -I, --check, --version,
-- usage errors, startup errors, the process's lifetime, task errors, the
-- log options, --pidfile and unbuffered stdout. Every case runs the real
-- build/luacomm as a separate process.
local comm = require "luacomm"
local cjson = require "cjson.safe"
local helpers = require "helpers"

local FIX = "spec/fixtures/host/"

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- What a command prints on its first line of stdout.
local function first_line(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("l")
  p:close()
  return s
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Runs fn with a host process started from args; the process is always
-- stopped afterwards, even when an assertion fails.
local with_host = helpers.with_host

describe("luacomm arg and ...", function()
  -- The reference: the standard interpreter on the same script and args.
  local function reference(args)
    local parts = { "lua5.4" }
    for i, a in ipairs(args) do parts[i + 1] = helpers.shquote(a) end
    local p = assert(io.popen(table.concat(parts, " ")))
    local out = p:read("a")
    p:close()
    return out
  end

  it("is what lua5.4 sets for a script, with the interpreter at negative indices", function()
    local st, out, err = helpers.run_host({ FIX .. "show_args.lua", "one", "two words", "" })
    assert.are.equal(0, st)
    assert.are.equal("", err)
    local expected = reference({ FIX .. "show_args.lua", "one", "two words", "" })
    assert.are.equal((expected:gsub("arg%[%-1%]=lua5%.4\n", "arg[-1]=" .. helpers.BIN .. "\n")), out)
    assert.truthy(out:find("arg[0]=" .. FIX .. "show_args.lua\n", 1, true))
    assert.truthy(out:find("...#=3\n...[1]=one\n...[2]=two words\n...[3]=\n", 1, true))
  end)

  it("puts the options before the script at negative indices", function()
    local st, out = helpers.run_host({ "--log-level", "warn", "-I", "/nonexistent", FIX .. "show_args.lua", "x" })
    assert.are.equal(0, st)
    assert.are.same({
      "arg[-5]=" .. helpers.BIN, "arg[-4]=--log-level", "arg[-3]=warn", "arg[-2]=-I", "arg[-1]=/nonexistent",
      "arg[0]=" .. FIX .. "show_args.lua", "arg[1]=x", "...#=1", "...[1]=x",
    }, lines(out))
  end)

  it("with -e CODE: CODE is arg[0], ARGS are arg[1..n] and ...", function()
    -- show_args.lua on one line, so arg[0] (the code itself) prints on one line too
    local code = assert(helpers.readfile(FIX .. "show_args.lua")):gsub("%-%-[^\n]*\n", ""):gsub("\n", " ")
    local st, out = helpers.run_host({ "-e", code, "a", "b" })
    assert.are.equal(0, st)
    assert.are.same({
      "arg[-2]=" .. helpers.BIN, "arg[-1]=-e", "arg[0]=" .. code, "arg[1]=a", "arg[2]=b",
      "...#=2", "...[1]=a", "...[2]=b",
    }, lines(out))
  end)

  it("with no ARGS: ... is empty", function()
    local st, out = helpers.run_host({ "-e", "print(select('#', ...), #arg)" })
    assert.are.equal(0, st)
    assert.are.equal("0\t0\n", out)
  end)

  it("treats what follows -- as the script even when it looks like an option", function()
    local st, out = helpers.run_host({ "--", FIX .. "show_args.lua", "--version" })
    assert.are.equal(0, st)
    assert.truthy(out:find("arg[1]=--version\n", 1, true))
  end)
end)

describe("luacomm -I DIR", function()
  local probe = [[
    local ok, m = pcall(require, "incmod")
    print("incmod", ok and m.from or "missing")
    ok, m = pcall(require, "incpkg")
    print("incpkg", ok and m.from or "missing")
    print("cpath", package.cpath)
  ]]

  it("is needed: without it the fixture modules are not found", function()
    local st, out = helpers.run_host({ "-e", probe })
    assert.are.equal(0, st)
    assert.truthy(out:find("incmod\tmissing\n", 1, true))
    assert.truthy(out:find("incpkg\tmissing\n", 1, true))
  end)

  it("makes DIR/?.lua and DIR/?/init.lua requireable and DIR/?.so first on package.cpath", function()
    local dir = FIX .. "inc1"
    local st, out = helpers.run_host({ "-I", dir, "-e", probe })
    assert.are.equal(0, st)
    assert.truthy(out:find("incmod\tinc1/incmod.lua\n", 1, true))
    assert.truthy(out:find("incpkg\tinc1/incpkg/init.lua\n", 1, true))
    assert.truthy(out:find("cpath\t" .. dir .. "/?.so;", 1, true), out)
  end)

  it("is repeatable, the first given searched first (also as -IDIR)", function()
    local st, out = helpers.run_host({ "-I", FIX .. "inc2", "-I" .. FIX .. "inc1", "-e", probe })
    assert.are.equal(0, st)
    assert.truthy(out:find("incmod\tinc2/incmod.lua\n", 1, true))
    assert.truthy(out:find("incpkg\tinc1/incpkg/init.lua\n", 1, true))
  end)
end)

describe("luacomm --check", function()
  it("exits 0 on a good file without running it", function()
    local mark = helpers.tmpdir() .. "/mark"
    for _, flag in ipairs{ "--check", "-c" } do
      local st, out, err = helpers.run_host({ flag, FIX .. "side_effect.lua" }, { env = { "LUACOMM_SPEC_MARK=" .. mark } })
      assert.are.equal(0, st)
      assert.are.equal("", out)
      assert.are.equal("", err)
      assert.is_false(exists(mark))
    end
    -- the fixture does leave its mark when it runs, so the check above can fail
    local st, out = helpers.run_host({ FIX .. "side_effect.lua" }, { env = { "LUACOMM_SPEC_MARK=" .. mark } })
    assert.are.equal(0, st)
    assert.are.equal("ran\n", out)
    assert.is_true(exists(mark))
  end)

  it("exits 1 with file:line: message on a syntax error, running nothing", function()
    local st, out, err = helpers.run_host({ "--check", FIX .. "syntax_error.lua" })
    assert.are.equal(1, st)
    assert.are.equal("", out)
    assert.are.equal(FIX .. "syntax_error.lua:3: unexpected symbol near '='\n", err)
  end)

  it("exits 1 on a file that does not exist", function()
    local st, _, err = helpers.run_host({ "--check", FIX .. "no_such_file.lua" })
    assert.are.equal(1, st)
    assert.truthy(err:find("no_such_file.lua", 1, true))
  end)
end)

describe("luacomm --version and --help", function()
  it("prints luacomm X.Y.Z (Lua 5.4.N, libevent V) with the versions actually in use", function()
    local lua = first_line("lua5.4 -v"):match("^(Lua 5%.4%.%d+)")
    local libevent = first_line("pkg-config --modversion libevent")
    assert.truthy(lua)
    assert.truthy(libevent:match("^2%.1%.%d+%-stable$"), libevent)
    for _, flag in ipairs{ "--version", "-v" } do
      local st, out, err = helpers.run_host({ flag })
      assert.are.equal(0, st)
      assert.are.equal("", err)
      assert.truthy(out:match("^luacomm %d+%.%d+%.%d+ "), out)
      assert.are.equal(("luacomm %s (%s, libevent %s)\n"):format(comm._VERSION, lua, libevent), out)
    end
  end)

  it("prints the usage with every option on stdout and exits 0", function()
    for _, flag in ipairs{ "-h", "--help" } do
      local st, out, err = helpers.run_host({ flag })
      assert.are.equal(0, st)
      assert.are.equal("", err)
      assert.truthy(out:match("^usage: luacomm %[options%] SCRIPT %[ARGS%.%.%.%]\n"), out)
      for _, opt in ipairs{ "-e CODE", "-I DIR", "--check", "--log-level", "--log-format", "--pidfile",
                            "--stop-timeout", "--version", "--help" } do
        assert.truthy(out:find(opt, 1, true), opt)
      end
    end
  end)
end)

describe("luacomm usage errors", function()
  local cases = {
    { { "--bogus", FIX .. "side_effect.lua" }, "unknown option '--bogus'" },
    { { "-x", FIX .. "side_effect.lua" }, "unknown option '-x'" },
    { {}, "no script given" },
    { { "--log-level", "warn" }, "no script given" },
    { { "-e" }, "'-e' needs an argument" },
    { { "-I" }, "'-I' needs an argument" },
    { { FIX .. "side_effect.lua", "--pidfile" }, nil }, -- not an error: an ARG of the script
    { { "--pidfile" }, "'--pidfile' needs an argument" },
    { { "--log-level" }, "'--log-level' needs an argument" },
    { { "--log-format" }, "'--log-format' needs an argument" },
    { { "--stop-timeout" }, "'--stop-timeout' needs a number of seconds" },
    { { "--log-level", "loud", FIX .. "side_effect.lua" }, "unknown log level 'loud'" },
    { { "--log-format", "xml", FIX .. "side_effect.lua" }, "unknown log format 'xml'" },
    { { "--stop-timeout", "soon", FIX .. "side_effect.lua" }, "'--stop-timeout' needs a number of seconds" },
    { { "--stop-timeout", "-1", FIX .. "side_effect.lua" }, "'--stop-timeout' needs a number of seconds" },
  }
  for _, case in ipairs(cases) do
    local args, msg = case[1], case[2]
    if msg then
      it(("exit 2 with a usage message for: luacomm %s"):format(table.concat(args, " ")), function()
        local mark = helpers.tmpdir() .. "/mark"
        local st, out, err = helpers.run_host(args, { env = { "LUACOMM_SPEC_MARK=" .. mark } })
        assert.are.equal(2, st)
        assert.are.equal("", out)
        assert.truthy(err:find("luacomm: " .. msg .. "\n", 1, true), err)
        assert.truthy(err:find("usage: luacomm", 1, true), err)
        assert.is_false(exists(mark))
      end)
    else
      it(("runs the script for: luacomm %s"):format(table.concat(args, " ")), function()
        local mark = helpers.tmpdir() .. "/mark"
        local st, out = helpers.run_host(args, { env = { "LUACOMM_SPEC_MARK=" .. mark } })
        assert.are.equal(0, st)
        assert.are.equal("ran\n", out)
      end)
    end
  end
end)

describe("luacomm startup errors", function()
  it("exit 1 with file:line: first on stderr, then a traceback", function()
    local st, out, err = helpers.run_host({ FIX .. "startup_error.lua" })
    assert.are.equal(1, st)
    assert.are.equal("", out)
    local l = lines(err)
    assert.are.equal(FIX .. "startup_error.lua:2: boom at startup", l[1])
    assert.are.equal("stack traceback:", l[2])
    assert.truthy(err:find(FIX .. "startup_error.lua:3: in ", 1, true), err)
    assert.truthy(err:find(FIX .. "startup_error.lua:4: in main chunk", 1, true), err)
  end)

  it("exit 1 for an error after the main chunk blocked, and for -e CODE", function()
    local st, _, err = helpers.run_host({ "-e", "require('luacomm').sleep(0.05)\nerror('late failure')" })
    assert.are.equal(1, st)
    local l = lines(err)
    assert.are.equal("(command line):2: late failure", l[1])
    assert.are.equal("stack traceback:", l[2])
  end)

  it("exit 1 with file:line: message for a syntax error in the script", function()
    local st, out, err = helpers.run_host({ FIX .. "syntax_error.lua" })
    assert.are.equal(1, st)
    assert.are.equal("", out)
    assert.truthy(err:match("^" .. FIX:gsub("%p", "%%%0") .. "syntax_error%.lua:3: "), err)
  end)

  it("exit 1 for a script that does not exist", function()
    local st, out, err = helpers.run_host({ FIX .. "no_such_file.lua" })
    assert.are.equal(1, st)
    assert.are.equal("", out)
    assert.truthy(err:find("no_such_file.lua", 1, true))
  end)
end)

describe("luacomm process lifetime", function()
  it("exits 0 at once when nothing is pending", function()
    local t0 = comm.now()
    local st, out, err = helpers.run_host({ "-e", "print('hello')" })
    assert.are.equal(0, st)
    assert.are.equal("hello\n", out)
    helpers.assert_no_error_log(err)
    assert.is_true(comm.now() - t0 < 5)
  end)

  it("exits 0 by itself when its last timer has fired", function()
    local st, out = helpers.run_host({ "-e", "require('luacomm').after(0.2, print, 'fired')" })
    assert.are.equal(0, st)
    assert.are.equal("fired\n", out)
  end)

  local pending = {
    timer = "comm.every(0.05, function() end)",
    listener = "assert(comm.listen('127.0.0.1:0'))",
    udp = "assert(comm.udp('127.0.0.1:0'))",
    task = "comm.spawn(function() comm.sleep(60) end)",
  }
  for what, code in pairs(pending) do
    it(("stays alive while a %s is pending, and SIGTERM ends it with 0"):format(what), function()
      helpers.run(function()
        with_host({ "-e", "local comm = require 'luacomm'; " .. code .. "; print('ready')" }, function(p)
          assert.truthy(p:wait_output("ready\n"))
          assert.is_nil(p:wait(0.5)) -- still running
          p:signal("TERM")
          assert.are.equal(0, p:wait(10))
          helpers.assert_no_error_log(p:stderr())
        end)
      end)
    end)
  end

  -- A dial-only node whose peer is down: nothing but this task is pending
  -- between its tries, and it must not be mistaken for nothing at all.
  it("stays alive while a task retries a refused connect with sleeps in between", function()
    local port = helpers.free_port()
    local st, out, err = helpers.run_host({ "-e", ([[
      local comm = require "luacomm"
      comm.spawn(function()
        for i = 1, 3 do
          local c, why = comm.connect("127.0.0.1:%d")
          print("try " .. i .. ": " .. tostring(c and "connected" or why))
          comm.sleep(0.05)
        end
        print("gave up")
      end)
    ]]):format(port) })
    assert.are.equal("try 1: connection refused\ntry 2: connection refused\ntry 3: connection refused\ngave up\n", out)
    assert.are.equal(0, st, err)
  end)

  it("logs a task's error with its traceback and keeps serving", function()
    helpers.run(function()
      with_host({ FIX .. "task_error.lua" }, function(p)
        local port = assert(p:wait_output("listening (%d+)\n"))
        local addr = "127.0.0.1:" .. port
        local c1 = assert(comm.connect(addr))
        assert(c1:send("boom"))
        local f, err = c1:recv(5)
        assert.is_nil(f)
        assert.are.equal("closed", err) -- the failed handler's connection was closed
        assert.truthy(p:wait_output("%[error%][^\n]*handler failed on purpose", "err"))
        local log = p:stderr()
        assert.truthy(log:find(FIX .. "task_error.lua:8: handler failed on purpose\nstack traceback:\n", 1, true), log)
        assert.is_nil(p:status())
        local c2 = assert(comm.connect(addr))
        assert(c2:send("still here"))
        assert.are.equal("echo:still here", c2:recv(5))
        c1:close(); c2:close()
        p:signal("TERM")
        assert.are.equal(0, p:wait(10))
      end)
    end)
  end)
end)

describe("luacomm logs", function()
  local noisy = [[
    local comm = require "luacomm"
    comm.log.debug("a debug line")
    comm.log.info("an info line with %s", "a format")
    comm.log.warn("quotes \" backslash \\ tab \t newline \n end")
    comm.log.error("an error line")
    comm.log.info("binary \255\254, then UTF-8 \195\169, a cut one \226\130, NUL \0.")
    comm.spawn(function() error("a task failure") end)
    comm.after(0.1, function() print("done") end)
  ]]

  it("--log-format json: every stderr line is a JSON object with ts, level and msg", function()
    local st, out, err = helpers.run_host({ "--log-format", "json", "--log-level", "debug", "-e", noisy })
    assert.are.equal(0, st)
    assert.are.equal("done\n", out)
    local seen = {}
    for _, line in ipairs(lines(err)) do
      -- JSON text is UTF-8 (RFC 8259): strict parsers reject the line otherwise
      assert(utf8.len(line), "not UTF-8: " .. line)
      local rec, why = cjson.decode(line)
      assert(rec, ("not JSON (%s): %s"):format(why, line))
      assert.are.equal("table", type(rec))
      assert.truthy(type(rec.ts) == "string" and rec.ts:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), line)
      assert.truthy(({ debug = true, info = true, warn = true, error = true })[rec.level], line)
      assert.are.equal("string", type(rec.msg))
      seen[#seen + 1] = rec
    end
    -- the script's records, in order (the host may add lines of its own)
    local expected = {
      { "debug", "a debug line" },
      { "info", "an info line with a format" },
      { "warn", "quotes \" backslash \\ tab \t newline \n end" },
      { "error", "an error line" },
      { "info", "binary \u{ff}\u{fe}, then UTF-8 \u{e9}, a cut one \u{e2}\u{82}, NUL \0." },
      { "error", "a task failure\nstack traceback:\n" },
    }
    local i = 1
    for _, rec in ipairs(seen) do
      local want = expected[i]
      if want and rec.level == want[1] and (rec.msg == want[2] or (i == #expected and rec.msg:find(want[2], 1, true))) then
        i = i + 1
      end
    end
    assert(i == #expected + 1, ("record %d of the script is missing or out of order in:\n%s"):format(i, err))
  end)

  it("--log-format json covers the host's own lines (stop)", function()
    helpers.run(function()
      with_host({ "--log-format", "json", "-e", "assert(require('luacomm').listen('127.0.0.1:0')); print('ready')" },
        function(p)
        assert.truthy(p:wait_output("ready\n"))
        p:signal("TERM")
        assert.are.equal(0, p:wait(10))
        local n = 0
        for _, line in ipairs(lines(p:stderr())) do
          local rec = cjson.decode(line)
          assert(type(rec) == "table" and rec.ts and rec.level and rec.msg, line)
          n = n + 1
        end
        assert.is_true(n >= 1)
      end)
    end)
  end)

  it("text is the default: one '[level] msg' line per record", function()
    local st, _, err = helpers.run_host({ "-e", "require('luacomm').log.info('plain %d', 42)" })
    assert.are.equal(0, st)
    assert.truthy(("\n" .. err):match("\n%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ %[info%] plain 42\n"), err)
  end)

  it("--log-level warn hides info and debug lines, and comm.log.level reports it", function()
    local st, out, err = helpers.run_host({ "--log-level", "warn", "-e", noisy .. "; print(comm.log.level())" })
    assert.are.equal(0, st)
    assert.are.equal("warn\ndone\n", out)
    assert.falsy(err:find("[info]", 1, true), err)
    assert.falsy(err:find("[debug]", 1, true), err)
    assert.truthy(err:find("[warn] quotes", 1, true), err)
    assert.truthy(err:find("[error] an error line", 1, true), err)
  end)

  it("--log-level info is the default and hides debug", function()
    local st, _, err = helpers.run_host({ "-e", noisy })
    assert.are.equal(0, st)
    assert.falsy(err:find("[debug]", 1, true), err)
    assert.truthy(err:find("[info] an info line with a format", 1, true), err)
  end)

  it("--log-level error hides warnings, including the host's stop lines", function()
    helpers.run(function()
      with_host({ "--log-level", "error", "-e", "assert(require('luacomm').listen('127.0.0.1:0')); print('ready')" },
        function(p)
        assert.truthy(p:wait_output("ready\n"))
        p:signal("TERM")
        assert.are.equal(0, p:wait(10))
        assert.are.equal("", p:stderr())
      end)
    end)
  end)
end)

describe("luacomm --pidfile", function()
  it("holds the pid while running and is removed at exit", function()
    helpers.run(function()
      local pidfile = helpers.tmpdir() .. "/luacomm.pid"
      with_host({ "--pidfile", pidfile, "-e", "require('luacomm').every(1, function() end); print('ready')" },
        function(p)
        assert.truthy(p:wait_output("ready\n"))
        assert.are.equal(tostring(p.pid) .. "\n", helpers.readfile(pidfile))
        p:signal("TERM")
        assert.are.equal(0, p:wait(10))
        assert.is_false(exists(pidfile))
      end)
    end)
  end)

  it("is removed after a startup error too", function()
    local pidfile = helpers.tmpdir() .. "/luacomm.pid"
    local st = helpers.run_host({ "--pidfile=" .. pidfile, FIX .. "startup_error.lua" })
    assert.are.equal(1, st)
    assert.is_false(exists(pidfile))
  end)
end)

describe("luacomm stdout", function()
  it("reaches the reader line by line while the process runs", function()
    helpers.run(function()
      with_host({ "-e", "print('before the sleep'); io.write('written\\n'); require('luacomm').sleep(60)" },
        function(p)
        assert.truthy(p:wait_output("before the sleep\nwritten\n", "out", 5))
        assert.is_nil(p:status())
        p:signal("TERM")
        assert.are.equal(0, p:wait(10))
      end)
    end)
  end)
end)
