-- CONTRACT §2 "TCP, framed and raw": listeners, connections, the error
-- vocabulary, raw I/O, unix and IPv6 sockets, comm.serve.
--
-- bytewise_spec.lua runs this file again with core.max_io(1) (every read
-- and write moves one byte), passing "bytewise" as the chunk's argument;
-- sizes shrink in that mode where noted, nothing is skipped.
local comm = require "luacomm"
local core = require "luacomm.core"
local helpers = require "helpers"

local BYTEWISE = select("#", ...) > 0 and (...) == "bytewise"
local suffix = BYTEWISE and " [1-byte I/O]" or ""

local backends = require "backends"
-- bodies take the module under test as their own `comm` (and `host`)
-- luacheck: ignore 412 421 423 431 432 433 212/host
local close_all = helpers.close_all

-- The big-ish payload of a test: distinct bytes, so a shift or a lost
-- chunk cannot go unnoticed.
local function pattern(n, seed)
  local t, s = {}, seed or 0
  for i = 1, n // 16 + 1 do t[i] = ("%015x|"):format((i + s) * 2654435761 % (1 << 60)) end
  return table.concat(t):sub(1, n)
end

-- Run on the real module and on the simulated one (spec/backends.lua),
-- but for raw stream I/O, unix and IPv6 sockets, output buffering and
-- the core's own controls, which the simulation does not have.
for _, b in ipairs(backends) do
local it_real = b.name == "luacomm" and it or function() end
describe("tcp" .. suffix .. " on " .. b.name, function()
  it("listen, connect, accept; addr and peer of both ends agree", function()
    b.run(function(comm)
      local l = assert(comm.listen("127.0.0.1:0"))
      local host, port = l:addr()
      assert.are.equal("127.0.0.1", host)
      assert.are.equal("integer", math.type(port))
      assert.is_true(port > 0)
      local c = assert(comm.connect("127.0.0.1:" .. port))
      local s = assert(l:accept(5))
      assert.are.same({ "127.0.0.1", port }, { c:peer() })
      assert.are.same({ "127.0.0.1", port }, { s:addr() })
      assert.are.same({ c:addr() }, { s:peer() })
      assert.are_not.equal(port, select(2, c:addr()))
      assert.is_true(c:send("ping"))
      assert.are.equal("ping", s:recv(5))
      assert.is_true(s:send("pong"))
      assert.are.equal("pong", c:recv(5))
      close_all(c, s, l)
    end)
  end)

  it("accept with a timeout gives nil, \"timeout\"; close wakes a waiting accept with \"closed\"", function()
    b.run(function(comm)
      local l = backends.listen(comm, "127.0.0.1")
      local t0 = comm.now()
      assert.are.same({ nil, "timeout" }, { l:accept(0.03) })
      assert.is_true(comm.now() - t0 >= 0.03)
      local waiter = comm.spawn(function() return l:accept() end)
      comm.yield()
      l:close()
      assert.are.same({ true, nil, "closed" }, { waiter:join(5) })
      l:close() -- idempotent
      assert.has_error(function() l:accept(0) end, "attempt to use a closed listener")
    end)
  end)

  it("connect to a port nobody listens on gives nil, \"connection refused\"", function()
    b.run(function(comm)
      local port = helpers.free_port()
      assert.are.same({ nil, "connection refused" }, { comm.connect("127.0.0.1:" .. port) })
    end)
  end)

  it("listen on a port in use gives nil, \"address in use\"", function()
    b.run(function(comm)
      local l, _, port = backends.listen(comm, "127.0.0.1")
      assert.are.same({ nil, "address in use" }, { comm.listen("127.0.0.1:" .. port) })
      l:close()
    end)
  end)

  it("a port can be listened on again at once after close (SO_REUSEADDR)", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      local _, port = l:addr()
      -- The server closes first: its end sits in TIME_WAIT on the port,
      -- which without SO_REUSEADDR makes the next bind fail.
      s:close()
      assert.are.same({ nil, "closed" }, { c:recv(5) })
      c:close()
      l:close()
      local again, err = comm.listen("127.0.0.1:" .. port)
      assert.is_truthy(again, err)
      local c2 = assert(comm.connect("127.0.0.1:" .. port))
      local s2 = assert(again:accept(5))
      assert.is_true(c2:send("again"))
      assert.are.equal("again", s2:recv(5))
      close_all(c2, s2, again)
    end)
  end)

  it("a malformed address raises; a host that does not resolve returns nil, err", function()
    local comm = b.module()
    for _, bad in ipairs{ "nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:x1",
                          "[::1]", "::1:80", "unix:" } do
      assert.has_error(function() comm.listen(bad) end, nil, bad)
      assert.has_error(function() comm.connect(bad) end, nil, bad)
    end
    assert.has_error(function() comm.listen(42.5) end)
    assert.has_error(function() comm.connect(nil) end)
    b.run(function(comm)
      local c, err = comm.connect("no-such-host.invalid:80")
      assert.is_nil(c)
      assert.are.equal("string", type(err))
    end)
  end)

  it_real("recv with a timeout gives nil, \"timeout\" and the connection still works", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      local t0 = comm.now()
      assert.are.same({ nil, "timeout" }, { s:recv(0.03) })
      assert.is_true(comm.now() - t0 >= 0.03)
      -- a timeout in the middle of a frame loses nothing either
      c:write(string.pack(">I4", 5) .. "ab")
      assert.are.same({ nil, "timeout" }, { s:recv(0.03) })
      c:write("cde")
      assert.are.equal("abcde", s:recv(5))
      assert.is_true(c:send("after"))
      assert.are.equal("after", s:recv(5))
      assert.is_true(s:send("back"))
      assert.are.equal("back", c:recv(5))
      assert.are.same({ nil, "timeout" }, { s:recv(0) })
      close_all(c, s, l)
    end)
  end)

  it("recv gives nil, \"closed\" when the peer closes between frames, after the frames it sent", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      c:send("one")
      c:send("")
      c:send("three")
      c:close()
      assert.are.equal("one", s:recv(5))
      assert.are.equal("", s:recv(5))
      assert.are.equal("three", s:recv(5))
      assert.are.same({ nil, "closed" }, { s:recv(5) })
      assert.are.same({ nil, "closed" }, { s:recv(5) }) -- and stays so
      close_all(s, l)
    end)
  end)

  it_real("recv gives nil, \"truncated\" when the peer closes mid-frame (in the payload)", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      c:send("whole")
      c:write(string.pack(">I4", 10) .. "abc")
      c:close()
      assert.are.equal("whole", s:recv(5))
      assert.are.same({ nil, "truncated" }, { s:recv(5) })
      close_all(s, l)
    end)
  end)

  it_real("recv gives nil, \"truncated\" when the peer closes mid-header", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      c:write("\0\0")
      c:close()
      assert.are.same({ nil, "truncated" }, { s:recv(5) })
      close_all(s, l)
    end)
  end)

  it_real("a frame announced over max_frame gives \"frame too large\", closes that connection, and the server serves on", function()
    b.run(function(comm)
      local served = 0
      local results = comm.channel()
      local l = comm.serve("127.0.0.1:0", function(conn)
        while true do
          local f, err = conn:recv(5)
          if not f then results:put(err); return end
          served = served + 1
          conn:send(f)
        end
      end, { max_frame = 100 })
      local host, port = l:addr()
      local addr = host .. ":" .. port
      local bad = assert(comm.connect(addr))
      bad:write(string.pack(">I4", 101) .. "x")
      assert.are.equal("frame too large", results:get(5))
      assert.are.same({ nil, "closed" }, { bad:recv(5) }) -- the server dropped it
      local good = assert(comm.connect(addr))
      local max = ("m"):rep(100)
      assert.is_true(good:send(max))      -- exactly max_frame is fine
      assert.are.equal(max, good:recv(5))
      assert.is_true(good:send("still serving"))
      assert.are.equal("still serving", good:recv(5))
      assert.are.equal(2, served)
      close_all(bad, good)
      assert.are.equal("closed", results:get(5))
      l:close()
    end)
  end)

  it("max_frame on connect: recv refuses an oversized frame, send refuses to send one", function()
    b.run(function(comm)
      local l, addr = backends.listen(comm, "127.0.0.1")
      local c = assert(comm.connect(addr, { max_frame = 8 }))
      local s = assert(l:accept(5))
      assert.are.same({ nil, "frame too large" }, { c:send("123456789") })
      assert.is_true(c:send("12345678"))
      assert.are.equal("12345678", s:recv(5))
      s:send("123456789")
      assert.are.same({ nil, "frame too large" }, { c:recv(5) })
      assert.is_true(c:closed())
      -- closed by the core, not by us: a condition, not a programming error
      assert.are.same({ nil, "closed" }, { c:send("x") })
      assert.are.same({ nil, "closed" }, { c:recv(0) })
      assert.are.same({ nil, "closed" }, { c:peer() })
      c:close()
      assert.has_error(function() c:send("x") end, "attempt to use a closed connection")
      close_all(c, s, l)
    end)
  end)

  it_real("a connection dropped for a too-large frame wakes a task blocked in send with nil, \"closed\"", function()
    b.run(function(comm)
      local l, addr = backends.listen(comm, "127.0.0.1", { max_frame = 10, hwm = 4 }) -- input pauses at 4 bytes: one header
      local peer = assert(comm.connect(addr))
      local x = assert(l:accept(5))
      peer:write(string.pack(">I4", 11))
      assert.truthy(backends.wait_until(comm, function() return x:stats().pending_in >= 4 end, 5, 0.001))
      -- Both run in one pass: the sender parks (its first frame is not
      -- flushed before the pass ends), then the reader finds the header.
      local status_then
      local sender = comm.spawn(function()
        assert.is_true(x:send("0123456789"))
        return x:send("parks") -- over the high-water mark
      end)
      local reader = comm.spawn(function()
        status_then = sender:status()
        return x:recv(5)
      end)
      assert.are.same({ true, nil, "frame too large" }, { reader:join(5) })
      assert.are.equal("waiting", status_then)
      assert.are.same({ true, nil, "closed" }, { sender:join(5) })
      close_all(peer, l)
    end)
  end)

  it_real("core.shutdown(\"all\") wakes tasks waiting on a connection with nil, \"closed\"", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      local reader = comm.spawn(function() return s:recv() end)
      comm.yield()
      assert.is_true(core.shutdown("all") >= 3)
      assert.are.same({ true, nil, "closed" }, { reader:join(5) })
      assert.is_true(c:closed() and s:closed())
      close_all(c, s, l)
    end)
  end)

  it_real("a second task reading the same connection raises", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      local first = comm.spawn(function() return s:recv(5) end)
      comm.yield()
      for _, read in ipairs{
        function() return s:recv(1) end,
        function() return s:read(1, 1) end,
        function() return s:readline(1) end,
      } do
        local ok, err = pcall(read)
        assert.is_false(ok)
        assert.matches("another task is already reading", err)
      end
      c:send("for the first")
      assert.are.same({ true, "for the first" }, { first:join(5) })
      close_all(c, s, l)
    end)
  end)

  it_real("close while another task waits in recv makes that recv return nil, \"closed\"", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      local waiting = {}
      for i, call in ipairs{ "recv", "readline" } do
        waiting[i] = comm.spawn(function() return s[call](s) end)
        comm.yield()
        s:close()
        assert.are.same({ true, nil, "closed" }, { waiting[i]:join(5) })
        c:close()
        c, s = assert(comm.connect(select(1, l:addr()) .. ":" .. select(2, l:addr()))), assert(l:accept(5))
      end
      local reader = comm.spawn(function() return s:read(10) end)
      comm.yield()
      s:close()
      assert.are.same({ true, nil, "closed" }, { reader:join(5) })
      close_all(c, l)
    end)
  end)

  it("close is idempotent, and using a closed connection raises", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      assert.is_false(c:closed())
      c:close()
      c:close()
      assert.is_true(c:closed())
      assert.has_error(function() c:send("x") end, "attempt to use a closed connection")
      assert.has_error(function() c:recv(0) end, "attempt to use a closed connection")
      assert.matches("closed", tostring(c))
      close_all(s, l)
    end)
  end)

  it_real("close flushes what was sent before it", function()
    b.run(function(comm)
      local size = BYTEWISE and 64 * 1024 or 8 * 1024 * 1024
      local c, s, l = backends.pair(comm, "127.0.0.1")
      local big = pattern(size)
      local frames = 3
      local sender = comm.spawn(function()
        -- Each send returns once the output is under the high-water mark;
        -- the last one returns at once with 8 MiB (far over it) unsent,
        -- and close comes right after it.
        for i = 1, frames do assert.is_true(c:send(i .. ":" .. big)) end
        local unsent = c:stats().pending_out
        c:close()
        return unsent
      end)
      for i = 1, frames do
        local f = s:recv(10)
        assert.are.equal(#big + #tostring(i) + 1, f and #f)
        assert.is_true(f == i .. ":" .. big, "frame " .. i .. " intact")
      end
      local ok, unsent = sender:join(5)
      assert.is_true(ok)
      assert.is_true(unsent > size // 2, "close came with " .. unsent .. " bytes unsent")
      assert.are.same({ nil, "closed" }, { s:recv(5) })
      close_all(s, l)
      -- the lingering connection is gone once flushed
      assert.truthy(backends.wait_until(comm, function() return comm.stats().conns == 0 end, 5))
    end, 30)
  end)

  it_real("close flushes even when comm.run returns and the script ends right after", function()
    local size = BYTEWISE and 32 * 1024 or 8 * 1024 * 1024
    b.run(function(comm)
      local l, _, port = backends.listen(comm, "127.0.0.1")
      local env = { "LUA_PATH=" .. helpers.shquote(package.path), "LUA_CPATH=" .. helpers.shquote(package.cpath) }
      if BYTEWISE then env[#env + 1] = "LUACOMM_MAX_IO=1" end
      local p = helpers.spawn_host({}, { env = env, argv = { "lua5.4", "-e", ([[
        local comm = require "luacomm"
        comm.run(function()
          local c = assert(comm.connect("127.0.0.1:%d"))
          assert(c:send(("%%08d"):format(%d) .. ("z"):rep(%d - 8)))
          c:close()
        end)
        io.write("lingering after run: ", comm.stats().lingering)
      ]]):format(port, size, size) } })
      local s = assert(l:accept(10))
      local f, err = s:recv(20)
      assert.are.equal(size, f and #f, err)
      assert.is_true(f == ("%08d"):format(size) .. ("z"):rep(size - 8))
      assert.are.same({ nil, "closed" }, { s:recv(5) })
      assert.are.equal(0, p:wait(10))
      assert.are.equal("lingering after run: 0", p:stdout())
      close_all(s, l)
    end, 30)
  end)

  it_real("raw write, read(n) and readline with \\n and \\r\\n", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      c:write("GET / HTTP/1.0\r\nHost: x\r\n\r\nline two\nrest")
      c:write("12345")
      assert.are.equal("GET / HTTP/1.0", s:readline(5))
      assert.are.equal("Host: x", s:readline(5))
      assert.are.equal("", s:readline(5))
      assert.are.equal("line two", s:readline(5))
      assert.are.equal("", s:read(0))
      assert.are.equal("rest1", s:read(5, 5))
      assert.are.equal("2345", s:read(4))
      assert.are.same({ nil, "timeout" }, { s:read(1, 0.02) })
      assert.are.same({ nil, "timeout" }, { s:readline(0.02) })
      c:write("a\r")
      assert.are.same({ nil, "timeout" }, { s:readline(0.02) }) -- "\r" alone ends nothing
      c:write("\nb\n")
      assert.are.equal("a", s:readline(5))
      assert.are.equal("b", s:readline(5))
      -- a frame sent after raw bytes is just more bytes to a raw reader
      c:send("xy")
      assert.are.equal("\0\0\0\2xy", s:read(6, 5))
      close_all(c, s, l)
    end)
  end)

  it_real("raw reads at the end of the stream: last line without newline, then \"closed\"; short read is \"truncated\"", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      c:write("first\nlast without newline")
      c:close()
      assert.are.equal("first", s:readline(5))
      assert.are.equal("last without newline", s:readline(5))
      assert.are.same({ nil, "closed" }, { s:readline(5) })
      assert.are.same({ nil, "closed" }, { s:read(1, 5) })
      s:close()
      c, s = assert(comm.connect(select(1, l:addr()) .. ":" .. select(2, l:addr()))), assert(l:accept(5))
      c:write("abc")
      c:close()
      assert.are.same({ nil, "truncated" }, { s:read(4, 5) })
      close_all(s, l)
    end)
  end)

  it_real("readline gives up on a line longer than max_frame: nil, \"line too long\", connection closed", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1", { max_frame = 16 })
      c:write(("x"):rep(16) .. "\n")
      assert.are.equal(("x"):rep(16), s:readline(5)) -- exactly max_frame is fine
      c:write(("y"):rep(40))
      assert.are.same({ nil, "line too long" }, { s:readline(5) })
      assert.is_true(s:closed())
      assert.are.same({ nil, "closed" }, { c:recv(5) })
      close_all(c, s, l)
    end)
  end)

  it_real("read rejects a negative size", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      assert.has_error(function() s:read(-1) end)
      assert.has_error(function() s:recv(-1) end)
      close_all(c, s, l)
    end)
  end)

  it_real("unix sockets: listen, connect, addr, and the socket file goes with the listener", function()
    b.run(function(comm)
      local path = helpers.tmpdir() .. "/s.sock"
      local l = assert(comm.listen("unix:" .. path))
      assert.are.same({ path, nil }, { l:addr() })
      local c = assert(comm.connect("unix:" .. path))
      local s = assert(l:accept(5))
      assert.is_true(c:send("over unix"))
      assert.are.equal("over unix", s:recv(5))
      s:write("line\n")
      assert.are.equal("line", c:readline(5))
      assert.are.equal(path, (s:addr()))
      close_all(c, s, l)
      assert.falsy(os.execute("test -e " .. helpers.shquote(path)))
      -- nothing listens there any more
      assert.are.same({ nil, "no such file or directory" }, { comm.connect("unix:" .. path) })
    end)
  end)

  it_real("unix sockets: a live socket file is not stolen, a stale one is replaced", function()
    b.run(function(comm)
      local path = helpers.tmpdir() .. "/s.sock"
      local l = assert(comm.listen("unix:" .. path))
      assert.are.same({ nil, "address in use" }, { comm.listen("unix:" .. path) })
      local c = assert(comm.connect("unix:" .. path)) -- the first is still the one answering
      local s = assert(l:accept(5))
      close_all(c, s, l)
    end)
    -- A process killed outright leaves its socket file behind.
    local path = helpers.tmpdir() .. "/stale.sock"
    local p = helpers.spawn_host({}, {
      argv = { "lua5.4", "-e", ([[
        local comm = require "luacomm"
        comm.run(function()
          local l = assert(comm.listen("unix:%s"))
          print("listening")
          comm.sleep(30)
        end)]]):format(path) },
      env = { "LUA_PATH=" .. helpers.shquote(package.path), "LUA_CPATH=" .. helpers.shquote(package.cpath) },
    })
    finally(function() p:kill() end)
    assert.truthy(p:wait_output("listening", "out", 10))
    p:signal("KILL")
    assert.truthy(p:wait(10))
    assert.truthy(os.execute("test -S " .. helpers.shquote(path)), "the dead process's socket file is there")
    b.run(function(comm)
      local l = assert(comm.listen("unix:" .. path))
      local c = assert(comm.connect("unix:" .. path))
      local s = assert(l:accept(5))
      assert.is_true(c:send("fresh"))
      assert.are.equal("fresh", s:recv(5))
      close_all(c, s, l)
    end)
  end)

  it_real("IPv6 on [::1]", function()
    if not helpers.has_ipv6(comm.listen) then
      pending(helpers.NO_IPV6)
      return
    end
    b.run(function(comm)
      local l = assert(comm.listen("[::1]:0"))
      local host, port = l:addr()
      assert.are.equal("::1", host)
      local c = assert(comm.connect("[::1]:" .. port))
      local s = assert(l:accept(5))
      assert.are.same({ "::1", port }, { c:peer() })
      assert.is_true(c:send("v6"))
      assert.are.equal("v6", s:recv(5))
      close_all(c, s, l)
    end)
  end)

  it_real("conn:stats counts frames and bytes each way", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      c:send("abc")
      c:send("")
      c:write("raw")
      assert.are.equal("abc", s:recv(5))
      assert.are.equal("", s:recv(5))
      assert.are.equal("raw", s:read(3, 5))
      local cs, ss = c:stats(), s:stats()
      assert.are.same({ 0, 2, 0, 4 + 3 + 4 + 3 }, { cs.frames_in, cs.frames_out, cs.bytes_in, cs.bytes_out })
      assert.are.same({ 2, 0, 14, 0 }, { ss.frames_in, ss.frames_out, ss.bytes_in, ss.bytes_out })
      s:send("back")
      assert.are.equal("back", c:recv(5))
      cs = c:stats()
      assert.are.same({ 1, 8 }, { cs.frames_in, cs.bytes_in })
      close_all(c, s, l)
    end)
  end)

  it("serve closes the connection when the handler returns, or fails", function()
    b.run(function(comm)
      local l = comm.serve("127.0.0.1:0", function(conn)
        local f = conn:recv(5)
        if f == "fail" then error("handler failed on purpose") end
        conn:send("bye " .. f)
      end)
      local host, port = l:addr()
      local addr = host .. ":" .. port
      local c = assert(comm.connect(addr))
      c:send("me")
      assert.are.equal("bye me", c:recv(5))
      assert.are.same({ nil, "closed" }, { c:recv(5) })
      c:close()
      c = assert(comm.connect(addr))
      c:send("fail")
      assert.are.same({ nil, "closed" }, { c:recv(5) })
      c:close()
      l:close()
      assert.truthy(backends.wait_until(comm, function() return comm.stats().conns == 0 end, 5))
    end)
  end)

  it("serve: a handler per connection, all running at once", function()
    b.run(function(comm)
      local l = comm.serve("127.0.0.1:0", function(conn)
        while true do
          local f = conn:recv()
          if not f then return end
          comm.sleep(0.001)
          conn:send(f:upper())
        end
      end)
      local host, port = l:addr()
      local clients = {}
      for i = 1, 10 do
        clients[i] = comm.spawn(function()
          local c = assert(comm.connect(host .. ":" .. port))
          for j = 1, 5 do
            c:send("c" .. i .. "m" .. j)
            assert.are.equal("C" .. i .. "M" .. j, c:recv(5))
          end
          c:close()
          return true
        end)
      end
      for i = 1, 10 do assert.are.same({ true, true }, { clients[i]:join(10) }) end
      l:close()
    end)
  end)

  it("serve returns nil, err when it cannot listen; bad handler raises", function()
    b.run(function(comm)
      local l, _, port = backends.listen(comm, "127.0.0.1")
      assert.are.same({ nil, "address in use" }, { comm.serve("127.0.0.1:" .. port, function() end) })
      assert.has_error(function() comm.serve("127.0.0.1:0", "nope") end)
      l:close()
    end)
  end)

  it("send to a peer that went away ends in nil, \"closed\"", function()
    b.run(function(comm)
      local c, s, l = backends.pair(comm, "127.0.0.1")
      s:close()
      local ok, err
      local chunk = ("z"):rep(BYTEWISE and 100 or 64 * 1024)
      for _ = 1, 200 do
        ok, err = c:send(chunk)
        if not ok then break end
        comm.sleep(0.001)
      end
      assert.are.same({ nil, "closed" }, { ok, err })
      close_all(c, l)
    end)
  end)

  it("listener options are checked", function()
    local comm = b.module()
    assert.has_error(function() comm.listen("127.0.0.1:0", { backlog = 0 }) end)
    assert.has_error(function() comm.listen("127.0.0.1:0", { hwm = "big" }) end)
    assert.has_error(function() comm.listen("127.0.0.1:0", { max_frame = -1 }) end)
  end)

  it_real("core.max_io is what this file runs under", function()
    assert.are.equal(BYTEWISE and 1 or 0, core.max_io())
  end)
end)
end
