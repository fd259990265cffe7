-- `luacomm --workers N` (CONTRACT §11 "Cores"): a supervisor and N worker
-- processes sharing the script's listening port through SO_REUSEPORT; a
-- dead worker restarted (with backoff when it keeps dying), logged;
-- SIGHUP reloads the workers in turn, in place, and the first failure
-- stops the roll; SIGTERM stops all gracefully; comm.worker(); --pidfile
-- names the supervisor; logs carry the worker id. Real processes, real
-- signals, loopback only.
local comm = require "luacomm"
local H = require "helpers"

local FIX = "spec/fixtures/workers/"

-- A copy of the fixture service in a folder of its own (a spec edits it).
local function service_dir()
  local dir = H.tmpdir()
  for _, f in ipairs{ "service.lua", "version.lua" } do
    H.writefile(dir .. "/" .. f, assert(H.readfile(FIX .. f)))
  end
  return dir
end

-- Runs fn(p, port, dir) with `luacomm --workers n service.lua PORT` up and
-- every worker ready; always stops it after.
local function with_workers(n, fn, extra)
  H.run(function()
    local dir, port = service_dir(), H.free_port()
    local args = { "--workers", tostring(n) }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    args[#args + 1] = dir .. "/service.lua"
    args[#args + 1] = tostring(port)
    local p = H.spawn_host(args)
    local ok, err = pcall(function()
      assert(H.wait_until(function()
        local _, k = p:stdout():gsub("ready\n", "")
        return k >= n
      end, 10), "workers not ready: " .. p:stderr())
      fn(p, port, dir)
    end)
    p:kill()
    if not ok then error(err, 0) end
  end, 60)
end

-- "id:version" answers, one per connection, until every worker 1..n has
-- answered; a table id -> version (fails after 500 connections).
local function answers(port, n)
  local seen, k = {}, 0
  for _ = 1, 500 do
    local c = assert(comm.connect("127.0.0.1:" .. port))
    local a = assert(c:recv(5))
    c:close()
    local id, v = a:match("^(%d+):(.*)$")
    id = tonumber(id)
    if not seen[id] then seen[id], k = v, k + 1 end
    if k == n then return seen end
  end
  error("not every worker answered: " .. comm.json.encode(seen))
end

local function pids(p)
  local t = {}
  for id, pid in p:stdout():gmatch("worker (%d+)/%d+ pid (%d+) ready") do
    t[tonumber(id)] = tonumber(pid)
  end
  return t
end

local count = H.count

describe("luacomm --workers", function()
  it("comm.worker() is 1, 1 without --workers, in the host and in stock Lua", function()
    local st, out = H.run_host({ "-e", "print(require('luacomm').worker())" })
    assert.are.equal(0, st)
    assert.are.equal("1\t1\n", out)
    assert.are.same({ 1, 1 }, { comm.worker() })
  end)

  it("refuses a bad worker count with a usage error", function()
    for _, bad in ipairs{ "0", "-1", "x", "257", "2.5" } do
      local st, _, err = H.run_host({ "--workers", bad, FIX .. "service.lua", "1" })
      assert.are.equal(2, st)
      assert.matches("--workers needs a number from 1 to 256", err, 1, true)
    end
    local st, _, err = H.run_host({ "--workers", "2", "--metrics", "127.0.0.1:0", FIX .. "service.lua", "1" })
    assert.are.equal(2, st)
    assert.matches("--metrics cannot be combined with --workers", err, 1, true)
  end)

  it("shares the listening port between the workers; --pidfile names the supervisor; logs say whose", function()
    local pidfile = H.tmpdir() .. "/pid"
    with_workers(2, function(p, port)
      local seen = answers(port, 2)
      assert.are.same({ "v1", "v1" }, { seen[1], seen[2] })
      assert.are.equal(p.pid, tonumber(H.readfile(pidfile)))
      local w = pids(p)
      assert.are_not.equal(w[1], w[2])
      assert.are_not.equal(p.pid, w[1])
      local err = p:stderr()
      assert.matches("%[info%] %[supervisor%] worker 1 started", err)
      assert.matches("%[info%] %[supervisor%] worker 2 started", err)
    end, { "--pidfile", pidfile })
  end)

  it("says whose each JSON log record is: a worker field, 0 for the supervisor", function()
    with_workers(2, function(p)
      local function whose()
        local seen = {}
        for line in p:stderr():gmatch("[^\n]+") do
          local rec = comm.json.decode(line)
          assert(rec, "not JSON: " .. line)
          seen[rec.worker] = true
        end
        return seen[0] and seen[1] and seen[2]
      end
      assert(H.wait_until(whose, 10), p:stderr())
    end, { "--log-format", "json" })
  end)

  it("restarts a worker that dies, and logs it", function()
    with_workers(2, function(p, port)
      local old = pids(p)[1]
      assert(os.execute("kill -9 " .. old))
      assert(p:wait_output("%[supervisor%] worker 1 died %(killed by signal 9%)[^\n]*restarting in", "err"))
      assert(H.wait_until(function() local w = pids(p); return w[1] ~= old and w[1] end, 10))
      assert.are.equal(2, count(p:stdout(), "worker 1/2 pid %d+ ready"))
      assert.are.equal(1, count(p:stdout(), "worker 2/2 pid %d+ ready"))
      answers(port, 2)
    end)
  end)

  it("restarts a worker that keeps dying with a growing backoff, and still stops at SIGTERM", function()
    H.run(function()
      local p = H.spawn_host({ "--workers", "1", "-e", "error('boom at startup')" })
      local ok, err = pcall(function()
        assert(p:wait_output("restarting in 0%.4 s", "err", 10), p:stderr())
        local e = p:stderr()
        local a, b, c = e:find("restarting in 0.1 s", 1, true), e:find("restarting in 0.2 s", 1, true),
                        e:find("restarting in 0.4 s", 1, true)
        assert(a and b and c and a < b and b < c, e)
        assert.matches("boom at startup", e)
        p:signal("TERM")
        assert.are.equal(0, p:wait(10))
      end)
      p:kill()
      if not ok then error(err, 0) end
    end, 30)
  end)

  it("SIGHUP reloads every worker in turn, in place", function()
    with_workers(2, function(p, port, dir)
      local before = pids(p)
      H.writefile(dir .. "/version.lua", 'return { name = "v2" }')
      p:signal("HUP")
      assert(p:wait_output("%[supervisor%] reload: all 2 worker%(s%) reloaded", "err"), p:stderr())
      local err = p:stderr()
      -- one at a time: worker 2 is asked only after worker 1 said ok
      local w1ok = err:find("reload: worker 1 ok", 1, true)
      local w2 = err:find("reload: worker 2 (pid", 1, true)
      assert(w1ok and w2 and w1ok < w2, err)
      assert.are.same(before, pids(p)) -- the same processes
      local seen = answers(port, 2)
      assert.are.same({ "v2", "v2" }, { seen[1], seen[2] })
    end)
  end)

  it("stops the roll at the first failed reload and leaves the rest on the old code", function()
    with_workers(2, function(p, port, dir)
      H.writefile(dir .. "/fail-reload-1", "")
      H.writefile(dir .. "/version.lua", 'return { name = "v2" }')
      p:signal("HUP")
      assert(p:wait_output("%[supervisor%] reload failed in worker 1: [^\n]*the roll stops: worker%(s%) 2%-2 keep the old code",
                           "err"), p:stderr())
      local err = p:stderr()
      assert.matches("%[worker 1%] reload failed, old code still serving", err)
      assert.is_nil(err:find("[worker 2] SIGHUP", 1, true), "worker 2 was asked to reload")
      local seen = answers(port, 2)
      assert.are.same({ "v1", "v1" }, { seen[1], seen[2] })
      -- once the cause is gone, a new roll goes through
      os.remove(dir .. "/fail-reload-1")
      p:signal("HUP")
      assert(p:wait_output("reload: all 2 worker%(s%) reloaded", "err"))
      seen = answers(port, 2)
      assert.are.same({ "v2", "v2" }, { seen[1], seen[2] })
    end)
  end)

  it("runs the cluster example: one node per worker, every write on every worker's replica", function()
    -- two ports in a row free for each machine: worker i listens on port + i - 1
    -- (the kernel's ephemeral ports come with their neighbour taken, so
    -- pick in the range below them)
    local function two_ports()
      for _ = 1, 200 do
        local port = math.random(20000, 30000)
        local l1 = comm.listen("127.0.0.1:" .. port)
        local l2 = l1 and comm.listen("127.0.0.1:" .. (port + 1))
        if l1 then l1:close() end
        if l2 then
          l2:close()
          return port
        end
      end
      error("no two free ports in a row")
    end
    H.run(function()
      local pa, pb = two_ports(), two_ports()
      local A, B = "127.0.0.1:" .. pa, "127.0.0.1:" .. pb
      local a = H.spawn_host({ "--workers", "2", "examples/cluster/node.lua", "a", A, B })
      local b = H.spawn_host({ "--workers", "2", "examples/cluster/node.lua", "b", B, A })
      local ok, err = pcall(function()
        local function client(...)
          return H.run_host({ "examples/cluster/client.lua", A, ... })
        end
        assert(H.wait_until(function() return client("b.2", "info") == 0 end, 15), b:stderr())
        local st, out = client("a", "put", "colour", '"blue"')
        assert.are.equal(0, st)
        -- a.2, b and b.2 (and the client node itself, which ignores it)
        assert(tonumber(out:match('"replicas":(%d+)')) >= 3, out)
        for _, who in ipairs{ "a.2", "b", "b.2" } do
          assert(H.wait_until(function()
            local s, o = client(who, "get", "colour")
            return s == 0 and o:find('"value":"blue"', 1, true)
          end, 10), who .. " has no replica")
        end
        assert.matches("%[worker 2%] node b%.2: peer", b:stderr())
      end)
      a:kill()
      b:kill()
      if not ok then error(err, 0) end
    end, 60)
  end)

  it("SIGTERM stops every worker gracefully, then the supervisor exits 0 and removes its pidfile", function()
    local pidfile = H.tmpdir() .. "/pid"
    with_workers(3, function(p)
      p:signal("TERM")
      assert.are.equal(0, p:wait(15))
      local out = p:stdout()
      for id = 1, 3 do assert.matches("worker " .. id .. " stopping", out) end
      assert.matches("%[supervisor%] all workers ended", p:stderr())
      assert.is_nil(io.open(pidfile))
      for _, pid in pairs(pids(p)) do
        assert.is_falsy(os.execute("kill -0 " .. pid .. " 2>/dev/null"), "worker still running")
      end
      H.assert_no_error_log(p:stderr())
    end, { "--pidfile", pidfile })
  end)
end)
