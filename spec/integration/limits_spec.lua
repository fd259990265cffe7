-- CONTRACT §8 "Limits" against a real host process, as an attacker on
-- loopback would try it: announced-but-unsent frames, descriptor
-- exhaustion, slowloris, a storm of oversized headers, big frames left
-- behind. Memory and CPU are read from /proc; a well-behaved client must be
-- served during and after each attack.
local comm = require "luacomm"
local helpers = require "helpers"

local FIX = "spec/fixtures/host/limits_server.lua"
local MiB = 1024 * 1024

-- VmRSS and VmSize of pid, in bytes.
local function mem(pid)
  local s = assert(helpers.readfile("/proc/" .. pid .. "/status"))
  return tonumber(s:match("VmRSS:%s*(%d+)")) * 1024, tonumber(s:match("VmSize:%s*(%d+)")) * 1024
end

-- User + system CPU seconds pid has used.
local function cpu(pid)
  local s = assert(helpers.readfile("/proc/" .. pid .. "/stat"))
  local rest = s:match("%) (.*)")
  local f = {}
  for x in rest:gmatch("%S+") do f[#f + 1] = x end
  return (tonumber(f[12]) + tonumber(f[13])) / 100 -- fields 14, 15: clock ticks
end

local count = helpers.count

-- Starts the fixture with listen opts (a JSON string); returns the process,
-- the echo address and a function returning the host's comm.stats().
local function start(opts_json, limits_json, spawn_opts)
  local args = { FIX, opts_json or "{}" }
  if limits_json then args[3] = limits_json end
  local p = helpers.spawn_host(args, spawn_opts)
  local line = p:wait_output("listening %d+ stats %d+\n")
  assert(line, "host did not start: " .. p:stderr())
  local port, sport = line:match("(%d+) stats (%d+)")
  local sc = assert(comm.connect("127.0.0.1:" .. sport))
  local function stats()
    assert(sc:send("?"))
    return comm.json.decode(assert(sc:recv(5)))
  end
  return p, "127.0.0.1:" .. port, stats
end

local function served(addr, tag)
  local c, err = comm.connect(addr, { timeout = 2 })
  if not c then return nil, err end
  c:send(tag)
  local got = c:recv(2)
  c:close()
  return got == tag
end

local function with_host(fn, ...)
  local args = { ... }
  helpers.run(function()
    local p, addr, stats = start(table.unpack(args))
    local ok, err = pcall(fn, p, addr, stats)
    p:kill()
    if not ok then error(err, 0) end
  end, 60)
end

describe("limits, against a host process", function()
  it("200 connections announcing 16 MiB and sending 10 bytes cost < 64 MiB, resident and reserved", function()
    with_host(function(p, addr, stats)
      assert.is_true(served(addr, "warm"))
      local rss0, vsz0 = mem(p.pid)
      local conns = {}
      for i = 1, 200 do
        conns[i] = assert(comm.connect(addr))
        assert(conns[i]:write(string.pack(">I4", 16 * MiB) .. "12345"))
      end
      -- The headers arrived first: the other 5 bytes come as reads of their own.
      assert(helpers.wait_until(function() return stats().bytes_in >= 200 * 9 end, 10))
      for i = 1, 200 do assert(conns[i]:write("67890")) end
      assert(helpers.wait_until(function() return stats().bytes_in >= 200 * 14 end, 10))
      assert.is_true(served(addr, "during"))
      local rss, vsz = mem(p.pid)
      assert.is_true(rss - rss0 < 64 * MiB, ("resident grew by %d MiB"):format((rss - rss0) // MiB))
      assert.is_true(vsz - vsz0 < 64 * MiB, ("reserved grew by %d MiB"):format((vsz - vsz0) // MiB))
      helpers.close_all(table.unpack(conns))
      assert.is_true(served(addr, "after"))
    end)
  end)

  it("out of descriptors (ulimit -n 64, 120 clients): no spin, one log line a second, serves again by itself", function()
    local sh = { "sh", "-c", 'ulimit -n 64 && exec "$0" "$@"', helpers.BIN }
    with_host(function(p, addr, stats)
      local flood = {}
      for i = 1, 120 do flood[i] = assert(comm.connect(addr)) end
      assert(helpers.wait_until(function() return p:stderr():find("accept failed") end, 10))
      local cpu0, t0 = cpu(p.pid), comm.now()
      comm.sleep(2) -- the window the CPU and the log are measured over
      local used, elapsed = cpu(p.pid) - cpu0, comm.now() - t0
      assert.is_true(used < elapsed / 2, ("the host used %.2f s of CPU in %.2f s"):format(used, elapsed))
      local lines = count(p:stderr(), "accept failed")
      assert.is_true(lines >= 1 and lines <= comm.now() - t0 + 4, lines .. " log lines")
      assert.is_true(stats().accept_errors >= 1)
      helpers.close_all(table.unpack(flood))
      assert(helpers.wait_until(function() return served(addr, "back") end, 10))
    end, "{}", nil, { argv = { sh[1], sh[2], sh[3], sh[4], FIX, "{}" } })
  end)

  it("slowloris: idle and trickling connections are closed after idle_timeout, logged once a second, cheaply", function()
    with_host(function(p, addr, stats)
      local _, vsz0 = mem(p.pid)
      local idle, trick = {}, {}
      for i = 1, 150 do
        idle[i] = assert(comm.connect(addr))
        trick[i] = assert(comm.connect(addr))
        assert(trick[i]:write(string.pack(">I4", 16 * MiB) .. "x"))
      end
      assert(helpers.wait_until(function() return stats().bytes_in >= 150 * 5 end, 10))
      for i = 1, 150 do trick[i]:write("y") end -- a read of its own, for each
      assert(helpers.wait_until(function() return stats().bytes_in >= 150 * 6 end, 10))
      local _, vsz = mem(p.pid)
      assert.is_true(vsz - vsz0 < 64 * MiB, ("reserved grew by %d MiB"):format((vsz - vsz0) // MiB))
      assert.is_true(served(addr, "during"))
      assert(helpers.wait_until(function() return stats().idle_closed >= 300 end, 15))
      for i = 1, 150 do
        assert.are.same({ nil, "closed" }, { idle[i]:recv(5) })
        local _, err = trick[i]:recv(5)
        assert.are.equal("closed", err)
      end
      local lines = count(p:stderr(), "idle for")
      assert.is_true(lines >= 1 and lines <= 10, lines .. " log lines")
      -- the lines held back are summed up, none goes unsaid
      assert(helpers.wait_until(function()
        local said = 0
        for line in p:stderr():gmatch("[^\n]*idle for[^\n]*") do
          said = said + 1 + tonumber(line:match("and (%d+) more like it") or 0)
        end
        return said == 300
      end, 5), p:stderr())
      assert(helpers.wait_until(function() return stats().conns == 1 end, 5)) -- only the stats connection
      assert.is_true(served(addr, "after"))
    end, '{"idle_timeout":1}')
  end)

  it("300 oversized headers: each connection closed and counted, the warning rate-limited", function()
    with_host(function(p, addr, stats)
      local t0 = comm.now()
      for _ = 1, 300 do
        local c = assert(comm.connect(addr))
        c:write(string.pack(">I4", 5000))
        assert.are.same({ nil, "closed" }, { c:recv(5) })
        c:close()
      end
      local lines = count(p:stderr(), "frame announced over max_frame")
      assert.is_true(lines >= 1 and lines <= comm.now() - t0 + 2, lines .. " log lines")
      assert(helpers.wait_until(function() return p:stderr():find("more like it") end, 5))
      assert.are.equal(300, stats().frames_too_large)
      assert.is_true(served(addr, "after"))
    end, '{"max_frame":1000}')
  end)

  it("memory goes back to the system once 20 clients that sent 4 MiB frames without reading leave", function()
    if (os.getenv("LD_PRELOAD") or ""):find("asan") then
      return pending("under ASan the allocator is ASan's: malloc_trim and RSS say nothing there")
    end
    with_host(function(p, addr, stats)
      assert.is_true(served(addr, "warm"))
      local rss0 = mem(p.pid)
      local frame = ("z"):rep(4 * MiB)
      local clients = {}
      for i = 1, 20 do
        clients[i] = assert(comm.connect(addr))
        for _ = 1, 3 do clients[i]:write(string.pack(">I4", #frame) .. frame) end
      end
      -- each echo task sent one frame back and waits on the unread output
      assert(helpers.wait_until(function() return stats().frames_out >= 20 + 1 end, 20))
      local peak = mem(p.pid)
      assert.is_true(served(addr, "during"))
      helpers.close_all(table.unpack(clients))
      local rss
      local ok = helpers.wait_until(function()
        rss = mem(p.pid)
        return rss - rss0 < 24 * MiB
      end, 10)
      assert(ok, ("resident stayed at +%d MiB (peak +%d MiB)"):format((rss - rss0) // MiB, (peak - rss0) // MiB))
      assert.is_true(served(addr, "after"))
    end)
  end)
end)
