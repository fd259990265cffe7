-- examples/echo.lua as a user runs it: `luacomm examples/echo.lua PORT`.
local comm = require "luacomm"
local helpers = require "helpers"

-- Frames of 0 B, 1 B and 64 KiB, each marked with the connection's tag so
-- that an answer that went to the wrong connection shows.
local function frames(tag)
  local big = {}
  for i = 1, 64 * 1024 do big[i] = string.char((i * 7 + #tag) % 256) end
  return { "", tag:sub(1, 1), tag .. table.concat(big):sub(#tag + 1) }
end

describe("examples/echo.lua", function()
  it("echoes 0 B, 1 B and 64 KiB frames unchanged on two concurrent connections; SIGTERM -> 0", function()
    helpers.run(function()
      local port = helpers.free_port()
      local p = helpers.spawn_host({ "examples/echo.lua", tostring(port) })
      local ok, err = pcall(function()
        assert.truthy(p:wait_output("echo listening on 127%.0%.0%.1:" .. port, "err"))
        local addr = "127.0.0.1:" .. port
        local results = {}
        local function client(tag)
          local c = assert(comm.connect(addr))
          local sent = frames(tag)
          -- all three frames out before the first answer is read: the
          -- server must keep them apart and in order
          for _, f in ipairs(sent) do assert(c:send(f)) end
          for _, f in ipairs(sent) do
            local got = assert(c:recv(5))
            assert(got == f, ("%s: a frame of %d bytes came back as %d bytes"):format(tag, #f, #got))
          end
          -- and once more, one at a time
          for _, f in ipairs(sent) do
            assert(c:send(f))
            assert(c:recv(5) == f)
          end
          local s = c:stats()
          c:close()
          return s
        end
        local a = comm.spawn(client, "A")
        local b = comm.spawn(client, "B")
        for _, t in ipairs{ a, b } do
          local done, stats = t:join(20)
          assert(done, stats)
          results[#results + 1] = stats
        end
        for _, s in ipairs(results) do
          assert.are.equal(6, s.frames_in)
          assert.are.equal(6, s.frames_out)
          assert.are.equal(s.bytes_out, s.bytes_in)
        end
        p:signal("TERM")
        assert.are.equal(0, p:wait(10))
        helpers.assert_no_error_log(p:stderr())
      end)
      p:kill()
      if not ok then error(err, 0) end
    end)
  end)
end)
