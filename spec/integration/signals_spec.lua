-- Signals to the luacomm command (CONTRACT §1, §5): SIGTERM/SIGINT stop
-- gracefully, flushing what was sent; a second one during a stuck stop exits
-- 1 at once; --stop-timeout cuts; SIGPIPE is ignored; SIGHUP on a plain
-- script changes nothing. Real processes, real signals, loopback only.
local comm = require "luacomm"
local helpers = require "helpers"

local FIX = "spec/fixtures/host/"
local MiB = 1024 * 1024

-- The bytes big_sender.lua sends: a repeating 0..255 pattern.
local function pattern(n)
  local block = {}
  for i = 0, 255 do block[#block + 1] = string.char(i) end
  block = table.concat(block)
  return (block:rep(n // 256 + 1)):sub(1, n)
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Runs fn(p) in a task with the host started from args, always killing it after.
local with_host = helpers.with_host

-- Starts big_sender.lua's exchange: a client that asks for a frame of n
-- bytes and then does not read (hwm = 1: it takes one chunk and stops), so
-- the host is left with output it cannot flush. Returns the client and the
-- address.
local function stuck_client(p, n)
  local port = assert(p:wait_output("listening (%d+)\n"))
  local addr = "127.0.0.1:" .. port
  local c = assert(comm.connect(addr, { hwm = 1 }))
  assert(c:send("send " .. n))
  local pending = tonumber(assert(p:wait_output("pending (%d+)\n")))
  assert(pending > 0, "the host flushed everything already: the spec would prove nothing")
  return c, addr
end

-- The host outlived what the test did to it: it is still running, still
-- echoes on a new connection, and then stops cleanly with no error logged.
local function survived(p, addr)
  assert.is_nil(p:status())
  local c = assert(comm.connect(addr))
  assert(c:send("still serving"))
  assert.are.equal("still serving", c:recv(5))
  c:close()
  p:signal("TERM")
  assert.are.equal(0, p:wait(10))
  helpers.assert_no_error_log(p:stderr())
end

describe("SIGTERM and SIGINT", function()
  for _, sig in ipairs{ "TERM", "INT" } do
    it(("SIG%s: listener closed, the frame sent before the stop arrives whole, exit 0"):format(sig), function()
      with_host({ FIX .. "big_sender.lua" }, function(p)
        local c, addr = stuck_client(p, 12 * MiB)
        p:signal(sig)
        assert.truthy(p:wait_output("SIG" .. sig .. ": stopping", "err"))
        assert.truthy(p:wait_output("listener%(s%) closed", "err"))
        -- the host is still flushing (nobody read yet), and no longer accepts
        assert.is_nil(p:status())
        local c2, err = comm.connect(addr)
        assert.is_nil(c2)
        assert.are.equal("connection refused", err)
        local frame, rerr = c:recv(10)
        assert(frame, rerr)
        assert.are.equal(12 * MiB, #frame)
        assert.is_true(frame == pattern(12 * MiB))
        assert.same({ nil, "closed" }, { c:recv(10) })
        c:close()
        assert.are.equal(0, p:wait(10))
        local log = p:stderr()
        helpers.assert_no_error_log(log)
        assert.falsy(log:find("cutting", 1, true), log)
      end)
    end)
  end

  it("a second SIGTERM during a stuck stop exits 1 at once and removes the pidfile", function()
    local pidfile = helpers.tmpdir() .. "/pid"
    with_host({ "--stop-timeout", "30", "--pidfile", pidfile, FIX .. "big_sender.lua" }, function(p)
      local c = stuck_client(p, 12 * MiB)
      assert.truthy(exists(pidfile))
      p:signal("TERM")
      assert.truthy(p:wait_output("listener%(s%) closed", "err"))
      assert.is_nil(p:wait(0.3)) -- stuck: the client does not read
      local t0 = comm.now()
      p:signal("TERM")
      assert.are.equal(1, p:wait(5))
      assert.is_true(comm.now() - t0 < 3)
      assert.truthy(p:stderr():find("second SIGTERM", 1, true), p:stderr())
      assert.is_false(exists(pidfile))
      c:close()
    end)
  end)

  it("a SIGINT after a SIGTERM also exits 1 at once", function()
    with_host({ "--stop-timeout", "30", FIX .. "big_sender.lua" }, function(p)
      local c = stuck_client(p, 12 * MiB)
      p:signal("TERM")
      assert.truthy(p:wait_output("listener%(s%) closed", "err"))
      p:signal("INT")
      assert.are.equal(1, p:wait(5))
      c:close()
    end)
  end)

  it("--stop-timeout 1: a peer that never reads is cut after about 1 s, exit 0, and the log says so", function()
    with_host({ "--stop-timeout", "1", FIX .. "big_sender.lua" }, function(p)
      local c = stuck_client(p, 12 * MiB)
      local t0 = comm.now()
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
      local took = comm.now() - t0
      assert.is_true(took >= 0.9 and took < 4, ("stopped after %.2f s"):format(took))
      assert.truthy(p:stderr():find("%[warn%] stop timeout %(1s%): cutting 1 connection"), p:stderr())
      -- what the client gets is cut short mid-frame
      local frame, err = c:recv(10)
      assert.is_nil(frame)
      assert.are.equal("truncated", err)
      c:close()
    end)
  end)

  it("comm.stop() from the script stops the same way, with its status", function()
    with_host({ "-e", [[
      local comm = require "luacomm"
      assert(comm.listen("127.0.0.1:0"))
      comm.after(0.1, comm.stop, 3)
    ]] }, function(p)
      assert.are.equal(3, p:wait(10))
      assert.truthy(p:stderr():find("listener(s) closed", 1, true), p:stderr())
    end)
  end)
end)

describe("SIGPIPE", function()
  it("a peer that resets the connection mid-write: the host survives and keeps serving", function()
    with_host({ FIX .. "flood.lua" }, function(p)
      local port = assert(p:wait_output("listening (%d+)\n"))
      local addr = "127.0.0.1:" .. port
      local c = assert(comm.connect(addr, { hwm = 1 }))
      assert(c:send("flood"))
      assert.are.equal(64 * 1024, #assert(c:recv(5)))
      comm.sleep(0.2) -- the host fills the socket buffers; we read no more
      -- closing with unread data in the receive buffer makes the kernel send a RST
      c:close()
      local why = p:wait_output("flood ended: ([^\n]+)\n")
      assert.are.equal("closed", why)
      survived(p, addr)
    end)
  end)

  it("a peer that closed before the host writes (EPIPE): survives and keeps serving", function()
    with_host({ FIX .. "flood.lua" }, function(p)
      local port = assert(p:wait_output("listening (%d+)\n"))
      local addr = "127.0.0.1:" .. port
      local c = assert(comm.connect(addr))
      -- the host's first write after our FIN draws a RST; its next one is
      -- EPIPE, which Linux signals with SIGPIPE unless the write asks not to
      assert(c:send("flood 0.2"))
      c:close()
      assert.are.equal("closed", p:wait_output("flood ended: ([^\n]+)\n"))
      survived(p, addr)
    end)
  end)

  it("writing to a pipe nobody reads: the host gets EPIPE, not killed by SIGPIPE", function()
    -- stdout is a pipe whose reader has exited: every print raises SIGPIPE,
    -- whatever flags the socket code passes (lua5.4 dies of it: status 141).
    local dir = helpers.tmpdir()
    local code = "for i = 1, 20 do print(i); require('luacomm').sleep(0.01) end io.stderr:write('survived\\n')"
    local cmd = ("(%s -e %s; echo $? > %s) | true"):format(helpers.shquote(helpers.BIN), helpers.shquote(code),
      helpers.shquote(dir .. "/status"))
    local st, out, err = helpers.run_host({}, { argv = { "sh", "-c", cmd } })
    assert.are.equal(0, st)
    assert.are.equal("", out)
    assert.are.equal("survived\n", err)
    assert.are.equal("0\n", helpers.readfile(dir .. "/status"))
  end)
end)

describe("SIGHUP", function()
  it("on a plain script (no service): logs a warning, changes nothing, keeps serving", function()
    with_host({ FIX .. "plain_server.lua" }, function(p)
      local port = assert(p:wait_output("listening (%d+)\n"))
      local c = assert(comm.connect("127.0.0.1:" .. port))
      assert(c:send("before"))
      assert.are.equal("before", c:recv(5))
      p:signal("HUP")
      local warning = assert(p:wait_output("%[warn%] ([^\n]+)\n", "err"))
      assert.truthy(warning:lower():find("reload") or warning:find("HUP"), warning)
      assert.is_nil(p:status())
      -- same process, same connection, same code
      assert(c:send("after"))
      assert.are.equal("after", c:recv(5))
      assert.are.equal(1, select(2, p:stdout():gsub("listening", "")))
      c:close()
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
      helpers.assert_no_error_log(p:stderr())
    end)
  end)

  it("with -e CODE: logs a warning and keeps running", function()
    with_host({ "-e", "require('luacomm').every(1, function() end); print('ready')" }, function(p)
      assert.truthy(p:wait_output("ready\n"))
      p:signal("HUP")
      assert.truthy(p:wait_output("%[warn%][^\n]*\n", "err"))
      assert.is_nil(p:wait(0.2))
      p:signal("TERM")
      assert.are.equal(0, p:wait(10))
    end)
  end)
end)
