-- CONTRACT §2 framing: a 4-byte big-endian length, then the payload; zero
-- length is valid; the default maximum is 16 MiB; frames from several
-- tasks never interleave. string.pack(">s4", payload) is the oracle.
--
-- bytewise_spec.lua runs this file again with core.max_io(1) (every read
-- and write moves one byte), passing "bytewise" as the chunk's argument.
-- In that mode the 16 MiB frames are skipped (16 million one-byte reads
-- and writes each way take minutes) and the concurrent frames are smaller;
-- every partial-header and partial-payload path still runs.
local comm = require "luacomm"
local helpers = require "helpers"

local BYTEWISE = select("#", ...) > 0 and (...) == "bytewise"
local suffix = BYTEWISE and " [1-byte I/O]" or ""
local MiB = 1024 * 1024
local BIG = BYTEWISE and 5000 or 70000 -- over one 64 KiB read at full speed

local pair, close_all = helpers.pair, helpers.close_all

-- n bytes that differ along their length, so a shifted or dropped piece
-- shows: 4 KiB blocks of varied bytes, each stamped with its number.
local BLOCK = {}
for i = 1, 4096 // 16 do BLOCK[i] = ("%015x;"):format((i * 40503) % (1 << 56)) end
BLOCK = table.concat(BLOCK)
local function payload(n, seed)
  local t = {}
  for k = 1, n // 4096 + 1 do t[k] = ("%08x"):format(k + (seed or 0) * 7919) .. BLOCK:sub(9) end
  return table.concat(t):sub(1, n)
end

-- An echo server on its own task; returns the listener and "host:port".
local function echo_server(opts)
  local l = assert(comm.serve("127.0.0.1:0", function(conn)
    while true do
      local f = conn:recv()
      if not f then return end
      assert(conn:send(f))
    end
  end, opts))
  local host, port = l:addr()
  return l, host .. ":" .. port
end

describe("frames" .. suffix, function()
  local sizes = { 0, 1, 3, 4, 5, 64 * 1024 }
  if not BYTEWISE then sizes[#sizes + 1] = 16 * MiB end

  for _, size in ipairs(sizes) do
    it(("a %d-byte frame echoes intact"):format(size), function()
      helpers.run(function()
        local l, addr = echo_server()
        local c = assert(comm.connect(addr))
        local p = payload(size, size)
        assert.is_true(c:send(p))
        local back = c:recv(20)
        assert.are.equal(#p, back and #back)
        assert.is_true(back == p, "payload intact")
        assert.is_true(c:send(p)) -- twice in a row on the same connection
        assert.is_true(c:recv(20) == p)
        close_all(c, l)
      end, 60)
    end)
  end

  if not BYTEWISE then
    it("one byte over 16 MiB is refused both ways by default", function()
      helpers.run(function()
        local c, s, l = pair()
        assert.are.same({ nil, "frame too large" }, { c:send(("x"):rep(16 * MiB + 1)) })
        c:write(string.pack(">I4", 16 * MiB + 1))
        assert.are.same({ nil, "frame too large" }, { s:recv(5) })
        close_all(c, s, l)
      end)
    end)
  end

  it("string.pack(\">s4\", p) written raw is received by recv", function()
    helpers.run(function()
      local c, s, l = pair()
      local frames = { "", "a", "hello", payload(1000), payload(BIG, 1), "\0\0\0\4", "" }
      for _, p in ipairs(frames) do c:write(string.pack(">s4", p)) end
      -- and all of them in one write, back to back
      local all = {}
      for i, p in ipairs(frames) do all[i] = string.pack(">s4", p) end
      c:write(table.concat(all))
      for _ = 1, 2 do
        for i, p in ipairs(frames) do
          local f = s:recv(10)
          assert.is_true(f == p, "frame " .. i)
        end
      end
      assert.are.same({ nil, "timeout" }, { s:recv(0.01) })
      close_all(c, s, l)
    end)
  end)

  it("what send puts on the wire is exactly string.pack(\">s4\", p)", function()
    helpers.run(function()
      local c, s, l = pair()
      local frames = { "", "a", "hello", payload(1000), payload(BIG, 2), "\0\0\0\4" }
      for _, p in ipairs(frames) do assert.is_true(c:send(p)) end
      for i, p in ipairs(frames) do
        local want = string.pack(">s4", p)
        local got = s:read(#want, 10)
        assert.is_true(got == want, "frame " .. i .. " on the wire")
      end
      assert.are.same({ nil, "timeout" }, { s:read(1, 0.01) })
      close_all(c, s, l)
    end)
  end)

  it("a frame split across writes at every point is still one frame", function()
    helpers.run(function()
      local c, s, l = pair()
      local wire = string.pack(">s4", "split me")
      for cut = 1, #wire - 1 do
        c:write(wire:sub(1, cut))
        assert.are.same({ nil, "timeout" }, { s:recv(0.005) })
        c:write(wire:sub(cut + 1))
        assert.are.equal("split me", s:recv(5))
      end
      close_all(c, s, l)
    end)
  end)

  it("a large frame arriving in pieces while recv waits, its tail sharing a write with the next frame, is whole", function()
    helpers.run(function()
      local c, s, l = pair()
      local big = ("0123456789abcdef"):rep(2500) -- 40,000 bytes
      local wire = string.pack(">s4", big) .. string.pack(">s4", "next")
      local got = {}
      local reader = comm.spawn(function()
        got[1] = s:recv(5)
        got[2] = s:recv(5)
      end)
      for _, cut in ipairs { { 1, 3 }, { 4, 9000 }, { 9001, 30000 }, { 30001, #wire } } do
        c:write(wire:sub(cut[1], cut[2]))
        comm.sleep(0.01) -- recv is waiting again before the next piece
      end
      reader:join()
      assert.are.equal(#big, #got[1])
      assert.is_true(got[1] == big)
      assert.are.equal("next", got[2])
      close_all(c, s, l)
    end)
  end)

  it("50 tasks sending on one connection: every frame arrives whole, none interleaved, each task's in order", function()
    helpers.run(function()
      local TASKS, EACH = 50, BYTEWISE and 4 or 20
      local c, s, l = pair()
      -- Frames of different sizes, some far bigger than a socket write
      -- takes at once, so that a frame spans many writes.
      local function frame(t, i)
        local size = BYTEWISE and (i * 37 + t) % 300 or (i % 4 == 0 and 200000 + t or (i * 997 + t) % 5000)
        local head = ("t%02d#%03d|"):format(t, i)
        return head .. payload(size, t * 1000 + i)
      end
      local senders = {}
      for t = 1, TASKS do
        senders[t] = comm.spawn(function()
          for i = 1, EACH do
            assert.is_true(c:send(frame(t, i)))
            if i % 3 == 0 then comm.yield() end
          end
          return true
        end)
      end
      local next_i = {}
      for t = 1, TASKS do next_i[t] = 1 end
      for _ = 1, TASKS * EACH do
        local f = assert(s:recv(20))
        local t, i = f:match("^t(%d%d)#(%d%d%d)|")
        t, i = tonumber(t), tonumber(i)
        assert.is_truthy(t, "frame starts with its header")
        assert.are.equal(next_i[t], i, "task " .. t .. "'s frames in order")
        assert.is_true(f == frame(t, i), "frame " .. t .. "#" .. i .. " whole")
        next_i[t] = i + 1
      end
      for t = 1, TASKS do
        assert.are.same({ true, true }, { senders[t]:join(5) })
        assert.are.equal(EACH + 1, next_i[t])
      end
      assert.are.same({ nil, "timeout" }, { s:recv(0.01) })
      local st = c:stats()
      assert.are.equal(TASKS * EACH, st.frames_out)
      assert.are.equal(TASKS * EACH, s:stats().frames_in)
      close_all(c, s, l)
    end, 60)
  end)

  it("frames and raw reads can share a connection", function()
    helpers.run(function()
      local c, s, l = pair()
      c:write("HELLO 1\r\n")
      c:send("framed after the line")
      c:write("tail")
      assert.are.equal("HELLO 1", s:readline(5))
      assert.are.equal("framed after the line", s:recv(5))
      assert.are.equal("tail", s:read(4, 5))
      close_all(c, s, l)
    end)
  end)
end)
