-- conn:forward(dst, [timeout]): the next frame of one connection sent on
-- another unchanged, without becoming a Lua string. Two real loopback
-- pairs: a -> (src ... dst) -> b, as a relay sees them.
local comm = require "luacomm"
local helpers = require "helpers"

local pair, close_all = helpers.pair, helpers.close_all

-- a writes into src; dst's frames come out at b.
local function relay_pairs(dst_opts)
  local a, src, l1 = pair()
  local dst, b, l2 = pair(dst_opts)
  l1:close()
  l2:close()
  return a, src, dst, b
end

describe("conn:forward", function()
  it("moves frames of every size unchanged and in order, returning their sizes", function()
    helpers.run(function()
      local a, src, dst, b = relay_pairs()
      local frames = { "", "x", ("ab"):rep(40), ("0123456789"):rep(10000), "last" }
      for _, f in ipairs(frames) do assert(a:send(f)) end
      for _, f in ipairs(frames) do assert.are.equal(#f, src:forward(dst, 5)) end
      for _, f in ipairs(frames) do
        local got = b:recv(5)
        assert.are.equal(#f, #got)
        assert.is_true(got == f)
      end
      assert.are.equal(#frames, src:stats().frames_in)
      assert.are.equal(#frames, dst:stats().frames_out)
      close_all(a, src, dst, b)
    end)
  end)

  it("waits for a frame, gives up after the timeout keeping a partial one, then forwards it", function()
    helpers.run(function()
      local a, src, dst, b = relay_pairs()
      assert.are.same({ nil, "timeout" }, { src:forward(dst, 0.02) })
      local wire = string.pack(">s4", "late frame")
      a:write(wire:sub(1, 6))
      assert.are.same({ nil, "timeout" }, { src:forward(dst, 0.02) })
      a:write(wire:sub(7))
      assert.are.equal(#"late frame", src:forward(dst, 5))
      assert.are.equal("late frame", b:recv(5))
      close_all(a, src, dst, b)
    end)
  end)

  it("reports the source's end as recv does: closed between frames, truncated inside one", function()
    helpers.run(function()
      local a, src, dst, b = relay_pairs()
      a:write(string.pack(">s4", "whole"))
      a:close()
      assert.are.equal(5, src:forward(dst, 5))
      assert.are.same({ nil, "closed" }, { src:forward(dst, 5) })
      local a2, src2, l = pair()
      l:close()
      a2:write(string.pack(">s4", "cut short"):sub(1, 7))
      a2:close()
      assert.are.same({ nil, "truncated" }, { src2:forward(dst, 5) })
      assert.are.equal("whole", b:recv(5))
      close_all(src, dst, b, src2)
    end)
  end)

  it("leaves a frame over the destination's max_frame for recv", function()
    helpers.run(function()
      local a, src, dst, b = relay_pairs({ max_frame = 8 })
      assert(a:send("too long for dst"))
      assert.are.same({ nil, "frame too large" }, { src:forward(dst, 5) })
      assert.are.equal("too long for dst", src:recv(5))
      close_all(a, src, dst, b)
    end)
  end)

  it("waits while the destination is over its high-water mark, losing nothing", function()
    helpers.run(function()
      local a, src, dst, b = relay_pairs({ hwm = 1 })
      -- b does not read: fill the kernel's buffers until dst's own output
      -- stays over its hwm after a pass has flushed what it could.
      local chunk = ("f"):rep(65536)
      local filler = 0
      helpers.wait_until(function()
        if dst:try_send(chunk) then filler = filler + 1 end
        comm.sleep(0.001)
        return dst:stats().pending_out > 1
      end, 10)
      assert(a:send("held"))
      assert.are.same({ nil, "timeout" }, { src:forward(dst, 0.05) })
      assert.are.equal("held", src:recv(5)) -- still there after the timeout
      assert(a:send("held"))
      local fwd = comm.spawn(function() return src:forward(dst) end)
      for _ = 1, filler do assert.are.equal(#chunk, #b:recv(5)) end
      assert.are.equal("held", b:recv(5))
      assert.are.same({ true, 4 }, { fwd:join() })
      close_all(a, src, dst, b)
    end)
  end)

  it("raises on misuse: a destination that is not a connection, one closed by the caller, itself", function()
    helpers.run(function()
      local a, src, dst, b = relay_pairs()
      assert.has_error(function() src:forward({}) end)
      assert.has_error(function() src:forward(src) end, "bad argument #1 to 'forward' (a connection cannot forward to itself)")
      dst:close()
      assert.has_error(function() src:forward(dst) end, "attempt to use a closed connection")
      close_all(a, src, b)
    end)
  end)
end)
