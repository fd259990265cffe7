-- CONTRACT §10: luacomm.sim — running unmodified scripts on a simulated
-- network in virtual time, faults, determinism and replay by seed, and
-- the errors for what it cannot do. The scenario specs over many seeds
-- are in spec/sim/.
local sim = require "luacomm.sim"
local helpers = require "helpers"
local shared = require "fixtures.sim.scenario"

local CLUSTER = shared.CLUSTER
local FRAMES = "spec/fixtures/sim/frames.lua"
local COUNTER = "spec/fixtures/sim/counter.lua"

local function shquote(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

-- A fresh lua5.4 running code with this build's modules (and `env`):
-- status, stdout, stderr.
local function run_lua(code, env)
  return helpers.run_host({}, {
    argv = { "lua5.4", "-e", code },
    env = { "LUA_PATH=" .. shquote(package.path), "LUA_CPATH=" .. shquote(package.cpath), env },
  })
end

local cluster, busy = shared.cluster, shared.busy

describe("luacomm.sim", function()
  it("runs the cluster example unmodified: a client's request is routed through a", function()
    local net, r = sim.run({ seed = 42, print = false }, function(net)
      cluster(net, { "a", "b", "c" })
      net:sleep(5)
      local me = net:client("me", "a:1")
      assert.are.equal("a", me:routes().c.via)
      assert(me:request("c", "put", { key = "k", value = "v" }))
      return me:request("c", "get", { key = "k" })
    end)
    assert.are.same({ "v", "c", "c" }, { r.value, r.by, r.from })
    assert.is_number(r.t)
    -- virtual time: five seconds and a bit, whatever the wall clock did
    assert.is_true(net:now() >= 5 and net:now() < 6)
    -- logs are captured per node, stamped with virtual time
    local up
    for _, l in ipairs(net:logs("a")) do up = up or l:match("^(%d+%.%d+) %[info%] node a: peer b up") end
    assert.is_truthy(up)
    assert.is_true(tonumber(up) < 1)
  end)

  it("gives the same trace for the same seed, in this process and in another lua5.4", function()
    local t1 = sim.run({ seed = 7, print = false }, busy):trace()
    local t2 = sim.run({ seed = 7, print = false }, busy):trace()
    local t3 = sim.run({ seed = 8, print = false }, busy):trace()
    assert.is_true(#t1 > 10000)
    assert.are.equal(t1, t2)
    assert.are_not.equal(t1, t3)
    -- the scenario again, from a child process with a fresh hash seed
    local code = [[
      local sim = require "luacomm.sim"
      local scenario = require "fixtures.sim.scenario"
      local net = sim.run({ seed = 7, print = false }, scenario.busy)
      io.write(net:trace())
    ]]
    local st, out = run_lua(code)
    assert.are.equal(0, st)
    assert.are.equal(t1, out)
  end)

  it("runs inside the luacomm host too, with the same trace", function()
    local code = [[
      local sim = require "luacomm.sim"
      local net = sim.run({ seed = 21, print = false }, function(net)
        net:spawn("a", "spec/fixtures/sim/counter.lua", "a", "a:1", "b:1")
        net:spawn("b", "spec/fixtures/sim/counter.lua", "b", "b:1")
        net:sleep(30)
      end)
      io.write(net:trace())
    ]]
    local st, out, err = helpers.run_host({ "-e", code })
    assert.are.equal(0, st, err)
    local here = sim.run({ seed = 21, print = false }, function(net)
      net:spawn("a", COUNTER, "a", "a:1", "b:1")
      net:spawn("b", COUNTER, "b", "b:1")
      net:sleep(30)
    end)
    assert.are.equal(here:trace(), out)
  end)

  it("a failing run raises with its seed, and LUACOMM_SIM_SEED replays it", function()
    local function scenario(net)
      net:spawn("a", COUNTER, "a", "a:1")
      net:sleep(net:random() * 10)
      error(("failed at %.6f"):format(net:now()))
    end
    local ok, err = pcall(sim.run, { seed = 1234, print = false }, scenario)
    assert.is_false(ok)
    assert.matches("seed 1234", err)
    assert.matches("LUACOMM_SIM_SEED=1234", err)
    local at = err:match("failed at (%d+%.%d+)")
    assert.is_string(at)
    -- another process, another seed in opts, the seed from the environment
    local st, _, stderr = run_lua([[
      local sim = require "luacomm.sim"
      sim.run({ seed = 99, print = false }, function(net)
        net:spawn("a", "spec/fixtures/sim/counter.lua", "a", "a:1")
        net:sleep(net:random() * 10)
        error(("failed at %.6f"):format(net:now()))
      end)
    ]], "LUACOMM_SIM_SEED=1234")
    assert.are_not.equal(0, st)
    assert.matches("seed 1234", stderr)
    assert.matches("failed at " .. at:gsub("%.", "%%."), stderr)
  end)

  it("a run without a seed draws one and names it on failure", function()
    local ok, err = pcall(sim.run, { print = false }, function() error("no seed given") end)
    assert.is_false(ok)
    assert.matches("seed %d+: .*no seed given", err)
  end)

  it("sim.check returns the failing seeds with their errors", function()
    local failures = sim.check{ seeds = 6, scenario = function(net, seed)
      net:sleep(1)
      assert(seed % 3 ~= 0, "multiple of three")
    end }
    assert.are.equal(2, #failures)
    assert.are.equal(3, failures[1].seed)
    assert.are.equal(6, failures[2].seed)
    assert.matches("multiple of three", failures[1].err)
    assert.are.same({}, sim.check{ seeds = { 1, 2 }, scenario = function(net) net:sleep(1) end })
  end)

  it("a partition stops traffic between groups both ways; heal brings it back", function()
    sim.run({ seed = 5, print = false }, function(net)
      cluster(net, { "a", "b", "c" })
      local me = net:client("me", "a:1")
      assert(me:request("b", "info"))
      net:partition({ "a", "me" }, { "b", "c" })
      net:sleep(1.5) -- past the cluster's timeout (1 s) + heartbeat (0.2 s)
      local peers = net:state("a").node:peers()
      assert.are.same({ "down", "down" }, { peers.b.state, peers.c.state })
      assert.are.same({ nil, "unreachable" }, { me:request("b", "info", nil, { timeout = 0.3 }) })
      net:heal()
      net:sleep(1.5)
      assert.are.equal("b", me:request("b", "info", nil, { timeout = 1, retries = 2 }).node)
    end)
  end)

  it("a one-way cut is seen by both ends within timeout + heartbeat", function()
    sim.run({ seed = 6, print = false }, function(net)
      net:spawn("a", COUNTER, "a", "a:1", "b:1")
      net:spawn("b", COUNTER, "b", "b:1")
      net:sleep(1)
      local a, b = net:state("a").node, net:state("b").node
      assert.are.same({ "up", "up" }, { a:peers().b.state, b:peers().a.state })
      net:cut("a", "b") -- a's frames to b are lost; b's reach a
      net:sleep(1.2)
      assert.are.same({ "down", "down" }, { a:peers().b.state, b:peers().a.state })
    end)
  end)

  it("crash loses the state, restart reruns the script", function()
    sim.run({ seed = 9, print = false }, function(net)
      net:spawn("a", COUNTER, "a", "a:1")
      net:spawn("b", COUNTER, "b", "b:1", "a:1")
      local me = net:client("me", "a:1")
      assert.are.equal(1, me:request("b", "incr", { key = "x" }).runs)
      local before = net:state("b")
      net:crash("b")
      local dead = net:stats("b")
      assert.are.same({ 0, 0, 0, 0 }, { dead.tasks, dead.timers, dead.conns, dead.listeners })
      net:restart("b")
      net:sleep(2)
      assert.are_not.equal(before, net:state("b"))
      assert.are.equal(1, me:request("b", "incr", { key = "x" }, { timeout = 1, retries = 2 }).runs)
    end)
  end)

  it("stop is a graceful stop: the service's stop runs, its peers hear bye at once", function()
    sim.run({ seed = 12, print = false }, function(net)
      cluster(net, { "a", "b" })
      net:sleep(1)
      local a = net:state("a").node
      assert.are.equal("up", a:peers().b.state)
      -- each process has its own copy of the node library
      assert.are.equal(net:require("a", "luacomm.node").Node, getmetatable(a))
      assert.are_not.equal(net:require("a", "luacomm.node"), net:require("b", "luacomm.node"))
      assert.are.equal("v1", net:service("b").VERSION)
      net:stop("b")
      net:sleep(0.1) -- far less than the cluster's timeout (1 s): the bye, not the silence
      assert.are.equal("down", a:peers().b.state)
      local procs = net:processes()
      assert.are.same({ { name = "a", running = true }, { name = "b", running = false } }, procs)
      assert.is_true(net:delivered() > 0)
    end)
  end)

  it("reload runs the file's current code in place, as SIGHUP does; a broken file changes nothing", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local script = dir .. "/svc.lua"
    local function write(version, broken)
      local f = assert(io.open(script, "w"))
      f:write(([[
        local node = require "luacomm.node"
        local M = {}
        function M.answer() return "%s" end
        function M.start(state, name, listen)
          state.node = node.new{ name = name, listen = listen, heartbeat = 0.2, timeout = 1 }
          state.node:on("ask", function() return M.answer() end)
          assert(state.node:start())
        end
        %s
        return M
      ]]):format(version, broken and "error('broken on purpose')" or ""))
      f:close()
    end
    write("v1")
    sim.run({ seed = 11, print = false }, function(net)
      net:spawn("s", script, "s", "s:1")
      local me = net:client("me", "s:1")
      assert.are.equal("v1", me:request("s", "ask"))
      write("v2")
      assert.is_true(net:reload("s"))
      assert.are.equal("v2", me:request("s", "ask"))
      write("v3", true)
      local ok, err = net:reload("s")
      assert.is_false(ok)
      assert.matches("broken on purpose", err)
      assert.are.equal("v2", me:request("s", "ask"))
      assert.are.equal("up", me:peers().s.state) -- the link carried on
      assert.are.same({ 1, 1 }, { net:stats("s").reloads, net:stats("s").reload_failures })
    end)
    os.remove(script)
    os.remove(dir)
  end)

  it("duplicate and reorder deliver frames twice and out of order; loss drops them", function()
    -- What client c got back of the n frames it sent to server s, under `faults`.
    local function echoed(faults, n)
      local opts = { seed = 3, print = false }
      for k, v in pairs(faults) do opts[k] = v end
      local _, got = sim.run(opts, function(net)
        net:spawn("s", FRAMES, "server", "s:1")
        net:spawn("c", FRAMES, "client", "s:1", n)
        net:sleep(3)
        return net:state("c").got
      end)
      return got
    end
    local got = echoed({ duplicate = 1 }, 5)
    -- every frame doubled on the way there and again on the way back
    assert.are.equal(20, #got)
    local reordered = echoed({ reorder = 1 }, 50)
    assert.are.equal(50, #reordered)
    local sorted = { table.unpack(reordered) }
    table.sort(sorted)
    assert.are_not.same(sorted, reordered)
    local lossy = echoed({ loss = 0.5 }, 50)
    assert.is_true(#lossy < 50)
    -- without faults: each once, in order
    local clean = echoed({}, 50)
    assert.are.same(sorted, clean)
  end)

  it("a minute of a five-node cluster is 60 virtual seconds", function()
    local net = sim.run({ seed = 1, print = false }, function(net)
      cluster(net, { "a", "b", "c", "d", "e" })
      net:sleep(60)
    end)
    assert.are.equal(60, net:now())
    for _, n in ipairs{ "a", "b", "c", "d", "e" } do
      assert.are.equal(4, net:state(n).node:stats().links)
    end
  end)

  it("what it cannot simulate raises \"not simulated: <call>\"", function()
    local errs = {}
    sim.run({ seed = 1, print = false }, function(net)
      local comm = net:comm()
      for what, fn in pairs{
        udp = function() return comm.udp() end,
        tls = function() return comm.connect("x:1", { tls = {} }) end,
        listen_tls = function() return comm.listen("x:1", { tls = {} }) end,
        unix = function() return comm.listen("unix:/tmp/x") end,
      } do
        local ok, err = pcall(fn)
        errs[what] = not ok and err
      end
      local l = assert(comm.listen("x:0"))
      local c = assert(comm.connect(("x:%d"):format(select(2, l:addr()))))
      local ok, err = pcall(c.write, c, "raw")
      errs.write = not ok and err
      c:close()
      l:close()
    end)
    assert.matches("not simulated: comm.udp", errs.udp)
    assert.matches("not simulated: tls", errs.tls)
    assert.matches("not simulated: tls", errs.listen_tls)
    assert.matches("not simulated: unix", errs.unix)
    assert.matches("not simulated: conn:write", errs.write)
    -- inside a simulated process, os.exit too (here: at startup, failing the run)
    local ok, err = pcall(sim.run, { seed = 1, print = false }, function(net)
      net:spawn("x", "spec/fixtures/sim/exits.lua")
      net:sleep(1)
    end)
    assert.is_false(ok)
    assert.matches("process x failed at startup: .*not simulated: os.exit", err)
  end)

  it("checks its arguments", function()
    local function raises(pattern, fn, ...)
      local ok, err = pcall(fn, ...)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    raises("function expected", sim.run, {})
    raises("options table expected", sim.run, 5, function() end)
    raises("probability", sim.run, { loss = 2 }, function() end)
    raises("latency", sim.run, { latency = { 2, 1 } }, function() end)
    raises("seed must be an integer", sim.run, { seed = 1.5 }, function() end)
    raises("scenario = function", sim.check, { seeds = 1 })
    for _, bad in ipairs{
      function(net) net:spawn("a b", CLUSTER) end,
      function(net) net:spawn("a", "no/such/script.lua") end,
      function(net) net:crash("nobody") end,
      function(net) net:loss(-0.1) end,
      function(net) net:latency(0.2, 0.1) end,
      function(net) net:sleep(-1) end,
      function(net) net:partition(42) end,
    } do
      local ok, err = pcall(sim.run, { seed = 1, print = false }, bad)
      assert.is_false(ok)
      assert.matches("seed 1: .*sim", err)
    end
    -- a script that fails at startup fails the run, naming the process
    local ok, err = pcall(sim.run, { seed = 2, print = false }, function(net)
      net:spawn("a", COUNTER) -- no name, no address: node.new raises
      net:sleep(1)
    end)
    assert.is_false(ok)
    assert.matches("process a failed at startup", err)
  end)
end)
