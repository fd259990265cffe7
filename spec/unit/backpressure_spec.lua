-- CONTRACT §2: conn:send "yields while the connection's unsent output is
-- above its high-water mark — backpressure, not unbounded memory".
-- One process holds both ends: a sender pushing 200 MiB in frames and a
-- peer that first reads nothing, then everything.
local comm = require "luacomm"
local helpers = require "helpers"

local KiB, MiB = 1024, 1024 * 1024

-- Under `make test-asan` freed memory sits in ASan's quarantine (256 MiB
-- by default) before it is reused, so churn shows as resident: allow it.
local ASAN = (os.getenv("LD_PRELOAD") or ""):match("libasan") ~= nil
local RSS_SLACK = 64 * MiB + (ASAN and 256 * MiB or 0)

local function rss()
  local s = assert(helpers.readfile("/proc/self/status"))
  return tonumber(s:match("VmRSS:%s*(%d+) kB")) * KiB
end

-- Frame i: an 8-byte stamp, then a shared body; distinct, cheap to check.
local BODY = {}
for i = 1, (256 * KiB) // 16 do BODY[i] = ("%015x,"):format(i * 2654435761 % (1 << 60)) end
BODY = table.concat(BODY)
local FRAME = 8 + #BODY
local function stamp(i) return ("%08d"):format(i) end

describe("backpressure", function()
  it("a sender blocks on a peer that does not read; memory stays bounded; then all 200 MiB arrive intact, in order", function()
    helpers.run(function()
      local TOTAL = 200 * MiB
      local N = TOTAL // FRAME + 1
      local hwm = 1 * MiB -- the default
      local l, addr = helpers.listen()
      local c = assert(comm.connect(addr))
      local s = assert(l:accept(5))
      collectgarbage("collect")
      local rss0 = rss()
      local sent = 0
      local sender = comm.spawn(function()
        for i = 1, N do
          assert.is_true(c:send(stamp(i) .. BODY))
          sent = i
        end
        return true
      end)
      -- Phase 1: nobody reads s. The sender must come to a stop.
      assert.truthy(helpers.wait_until(function()
        local before = sent
        comm.sleep(0.02)
        return sender:status() == "waiting" and sent == before
      end, 5))
      local stalled_at = sent
      assert.is_true(stalled_at * FRAME < 64 * MiB,
        ("the sender got %d MiB out with nobody reading"):format(stalled_at * FRAME // MiB))
      for _ = 1, 5 do
        local out, inp = c:stats().pending_out, s:stats().pending_in
        assert.is_true(out <= hwm + FRAME + 4, "pending_out " .. out)
        assert.is_true(inp <= hwm + MiB, "pending_in " .. inp)
        assert.are.equal(stalled_at, sent)
        comm.sleep(0.01)
      end
      assert.is_true(rss() - rss0 < RSS_SLACK, ("RSS grew %d MiB while blocked"):format((rss() - rss0) // MiB))
      -- Phase 2: the peer reads everything, checking each frame.
      local peak_out, peak_rss = 0, 0
      for i = 1, N do
        local f = s:recv(10)
        assert.are.equal(FRAME, f and #f)
        if f:sub(1, 8) ~= stamp(i) then
          error(("frame %d out of order: got %q"):format(i, f:sub(1, 8)))
        end
        if f:sub(9) ~= BODY then error("frame " .. i .. " corrupted") end
        if i % 64 == 0 then
          peak_out = math.max(peak_out, c:stats().pending_out)
          peak_rss = math.max(peak_rss, rss())
        end
      end
      assert.are.same({ true, true }, { sender:join(5) })
      assert.are.equal(N, sent)
      assert.is_true(peak_out <= hwm + FRAME + 4, "pending_out peaked at " .. peak_out)
      assert.is_true(peak_rss - rss0 < RSS_SLACK, ("RSS grew %d MiB during the transfer"):format((peak_rss - rss0) // MiB))
      assert.are.same({ nil, "timeout" }, { s:recv(0.01) })
      local cs, ss = c:stats(), s:stats()
      assert.are.equal(N, cs.frames_out)
      assert.are.equal(N, ss.frames_in)
      assert.are.equal(N * (FRAME + 4), ss.bytes_in)
      assert.is_true(ss.bytes_in > TOTAL)
      c:close(); s:close(); l:close()
    end, 30)
  end)

  it("several senders blocked on one connection all resume and finish", function()
    helpers.run(function()
      local l, addr = helpers.listen({ hwm = 64 * KiB })
      local c = assert(comm.connect(addr, { hwm = 64 * KiB }))
      local s = assert(l:accept(5))
      local senders = {}
      for t = 1, 10 do
        senders[t] = comm.spawn(function()
          for i = 1, 20 do assert.is_true(c:send(("%02d:%02d:"):format(t, i) .. BODY)) end
          return true
        end)
      end
      assert.truthy(helpers.wait_until(function()
        for t = 1, 10 do if senders[t]:status() ~= "waiting" then return false end end
        return true
      end, 5))
      local next_i = {}
      for _ = 1, 200 do
        local f = assert(s:recv(10))
        local t, i = f:match("^(%d%d):(%d%d):")
        t, i = tonumber(t), tonumber(i)
        assert.are.equal((next_i[t] or 0) + 1, i)
        next_i[t] = i
        assert.is_true(f:sub(7) == BODY)
      end
      for t = 1, 10 do assert.are.same({ true, true }, { senders[t]:join(5) }) end
      c:close(); s:close(); l:close()
    end, 30)
  end)

  it("a blocked sender is released with nil, \"closed\" when its connection is closed", function()
    helpers.run(function()
      local l, addr = helpers.listen()
      local c = assert(comm.connect(addr, { hwm = 64 * KiB }))
      local s = assert(l:accept(5))
      local sender = comm.spawn(function()
        while true do
          local ok, err = c:send(BODY)
          if not ok then return err end
        end
      end)
      assert.truthy(helpers.wait_until(function() return sender:status() == "waiting" end, 5))
      c:close()
      assert.are.same({ true, "closed" }, { sender:join(5) })
      s:close(); l:close()
    end)
  end)
end)
