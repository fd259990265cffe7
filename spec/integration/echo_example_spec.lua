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
  -- What an idle connection costs: its task (a coroutine), its C state,
  -- no output buffer and no closure of its own; and no OpenSSL mapped.
  -- 1000 connections, each echoed once, then held: about 2.1 KiB each
  -- (it was 2.5 KiB with an output buffer and a closure per connection).
  it("holds 1000 idle connections in under 2.4 KiB of RSS each, without mapping OpenSSL", function()
    if (os.getenv("LD_PRELOAD") or ""):find("asan") then
      return pending("under ASan the allocator is ASan's: RSS says nothing there")
    end
    helpers.run(function()
      local port = helpers.free_port()
      local p = helpers.spawn_host({ "examples/echo.lua", tostring(port) })
      local conns = {}
      local ok, err = pcall(function()
        assert.truthy(p:wait_output("echo listening on 127%.0%.0%.1:" .. port, "err"))
        local function rss()
          local st = assert(helpers.readfile("/proc/" .. p.pid .. "/status"))
          return tonumber(st:match("VmRSS:%s*(%d+)")) * 1024
        end
        local before = rss()
        -- all connected first, then 64-byte frames on all of them at once,
        -- as a burst of clients would
        for i = 1, 1000 do conns[i] = assert(comm.connect("127.0.0.1:" .. port)) end
        for i, c in ipairs(conns) do assert(c:send(("%064d"):format(i))) end
        for i, c in ipairs(conns) do assert.are.equal(("%064d"):format(i), c:recv(5)) end
        local per_conn = (rss() - before) / 1000
        assert.is_true(per_conn < 2.4 * 1024, ("%.0f bytes per idle connection"):format(per_conn))
        assert.is_nil(helpers.readfile("/proc/" .. p.pid .. "/maps"):find("libssl", 1, true))
      end)
      helpers.close_all(table.unpack(conns))
      p:kill()
      if not ok then error(err, 0) end
    end)
  end)
end)
