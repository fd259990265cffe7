-- luacomm.sim: many luacomm processes in one Lua state, on a simulated
-- network, in virtual time, with seeded faults (CONTRACT §10).
--
--   sim.run({ seed = 42 }, function(net)
--     net:spawn("a", "examples/cluster/node.lua", "a", "a:1", "b:1")
--     net:spawn("b", "examples/cluster/node.lua", "b", "b:1", "a:1")
--     net:sleep(5)
--     local me = net:client("me", "a:1")
--     assert(me:request("b", "info"))
--   end)
--
-- The pieces: luacomm.sim.world (virtual clock and scheduler),
-- luacomm.sim.net (connections and faults), luacomm.sim.proc (a process:
-- its own globals, modules and simulated luacomm.core), luacomm.sim.rng
-- (the seeded generator), luacomm.sim.json (order-independent encoding).
-- docs/SIMULATION.md is the guide.
local world_mod = require "luacomm.sim.world"
local net_mod = require "luacomm.sim.net"
local proc_mod = require "luacomm.sim.proc"
local simjson = require "luacomm.sim.json"
local canon_decode = require("cjson").new().decode

local type, ipairs, error, tostring, format = type, ipairs, error, tostring, string.format
local pack, unpack, concat = table.pack, table.unpack, table.concat

local M = {}
M._VERSION = "0.1.0"

local Sim = {}
Sim.__index = Sim

local DRIVER = "(spec)"

local function probability(p, what)
  if type(p) ~= "number" or p ~= p or p < 0 or p > 1 then
    error(format("sim: %s must be a probability in [0, 1]", what), 3)
  end
  return p
end

local function check_opts(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'run' (options table expected)", 3) end
  local lat = opts.latency
  if lat ~= nil and (type(lat) ~= "table" or type(lat[1]) ~= "number" or type(lat[2]) ~= "number"
                     or lat[1] < 0 or lat[2] < lat[1]) then
    error("sim: latency must be { min, max } with 0 <= min <= max", 3)
  end
  for _, k in ipairs{ "loss", "duplicate", "reorder" } do
    if opts[k] ~= nil then probability(opts[k], k) end
  end
  if opts.trace ~= nil and opts.trace ~= "frames" and opts.trace ~= "events" then
    error('sim: trace must be "frames" or "events"', 3)
  end
end

-- The seed of a run: LUACOMM_SIM_SEED, else opts.seed, else a random one.
local function pick_seed(opts)
  local env = os.getenv("LUACOMM_SIM_SEED")
  if env and env ~= "" then
    local s = math.tointeger(tonumber(env))
    if not s then error("LUACOMM_SIM_SEED must be an integer, got '" .. env .. "'", 3) end
    return s
  end
  if opts.seed ~= nil then
    local s = math.tointeger(opts.seed)
    if not s then error("sim: seed must be an integer", 3) end
    return s
  end
  return math.random(1, 2 ^ 31 - 1)
end

-- Called from a task of the real luacomm loop (in the host, or under
-- comm.run), simulations yield to that loop every 50 ms of CPU or so —
-- across runs too, as sim.check makes many short ones — so the host's
-- other tasks and signals are served, and its runaway guard (a task
-- that never yields) is not tripped by a long check.
local last_breath = os.clock()
local function host_yield()
  local ok, core = pcall(require, "luacomm.core")
  if not (ok and core.running()) then return nil end
  return function()
    local now = os.clock()
    if now - last_breath >= 0.05 then
      last_breath = now
      core.yield()
    end
  end
end

-- A JSON text with its object keys sorted, or nil if it is not JSON.
local function sorted_json(text)
  local ok, v = pcall(canon_decode, text)
  if not ok then return nil end
  local fine, out = pcall(simjson.encode, v)
  return fine and out or nil
end

-- A frame as the trace shows it: a node envelope (a JSON header, and a
-- body after a line feed when it has one) with its keys sorted; other
-- frames as they are.
local function canon(frame)
  if frame:byte(1) ~= 123 then return nil end -- "{"
  local nl = frame:find("\n", 1, true)
  if not nl then return sorted_json(frame) end
  local head, body = sorted_json(frame:sub(1, nl - 1)), sorted_json(frame:sub(nl + 1))
  if head and body then return head .. "\n" .. body end
  return nil
end

local function new_sim(seed, opts)
  local breathe = host_yield()
  if breathe then breathe() end
  local world = world_mod.new(seed, { max_time = opts.max_time, breathe = breathe })
  local self = setmetatable({ seed = seed, world = world, procs = {}, order = {}, skews = {},
                              print = opts.print ~= false, echo_logs = opts.echo_logs,
                              log_level = opts.log_level }, Sim)
  self.net = net_mod.new(world, opts)
  -- frames in the trace: JSON with sorted keys (see luacomm.sim.proc)
  world.canon = canon
  self.driver = proc_mod.new(self, DRIVER, nil)
  world:trace("seed %d", seed)
  return self
end

function Sim:failed(msg)
  if self.failure == nil then self.failure = msg end
end

-- sim.run(opts, fn): runs fn(net) as the spec's task in a new simulation
-- and returns net (for net:trace() and the rest) and fn's results. A
-- failure raises an error whose message starts "luacomm.sim: seed N:".
-- With LUACOMM_SIM_TRACE=FILE in the environment, the trace of the run
-- (failed or not) is written to FILE.
function M.run(opts, fn)
  if type(opts) == "function" then opts, fn = {}, opts end
  opts = opts or {}
  check_opts(opts)
  if type(fn) ~= "function" then error("bad argument #2 to 'run' (function expected)", 2) end
  local seed = pick_seed(opts)
  local self = new_sim(seed, opts)
  local w = self.world
  local task = w:spawn(self.driver, fn, self)
  -- A simulation makes garbage fast (events, frames, decoded envelopes):
  -- the collector waits for the heap to grow 4x, not 2x, during the run
  -- (a fifth less CPU), and is set back after.
  local pause = collectgarbage("setpause", opts.gc_pause or 400)
  local ok, finished = pcall(w.loop, w, function() return task.results ~= nil or self.failure ~= nil end)
  collectgarbage("setpause", pause)
  local why
  if not ok then
    why = tostring(finished)
  elseif self.failure then
    why = self.failure
  elseif not finished then
    why = "deadlock: the scenario waits for something nothing pending can bring"
  elseif not task.results[1] then
    why = task.results.tb or tostring(task.results[2])
  end
  local trace_file = os.getenv("LUACOMM_SIM_TRACE")
  if trace_file and trace_file ~= "" then
    local f = io.open(trace_file, "w")
    if f then
      f:write(self:trace())
      f:close()
    else
      trace_file = nil
    end
  end
  if why then
    error(format("luacomm.sim: seed %d: %s (replay: LUACOMM_SIM_SEED=%d%s)", seed, why, seed,
                 trace_file and ("; trace in " .. trace_file) or ""), 2)
  end
  local r = task.results
  return self, unpack(r, 2, r.n)
end

-- sim.check{ seeds = N | { seed, ... }, scenario = fn(net, seed), opts = {...} }
-- -> { { seed = N, err = msg }, ... } for the seeds that failed.
function M.check(t)
  if type(t) ~= "table" or type(t.scenario) ~= "function" then
    error("bad argument #1 to 'check' ({ seeds =, scenario = function } expected)", 2)
  end
  local list = t.seeds or 100
  local env = os.getenv("LUACOMM_SIM_SEED")
  if env and env ~= "" then
    list = { math.tointeger(tonumber(env)) }
  elseif type(list) == "number" then
    local first, n = t.first or 1, list
    list = {}
    for i = 1, n do list[i] = first + i - 1 end
  end
  local failures = {}
  for _, seed in ipairs(list) do
    local opts = {}
    for k, v in pairs(t.opts or {}) do opts[k] = v end
    opts.seed = seed
    if opts.print == nil then opts.print = false end
    local ok, err = pcall(M.run, opts, function(net) return t.scenario(net, seed) end)
    if not ok then failures[#failures + 1] = { seed = seed, err = tostring(err) } end
  end
  return failures
end

---------------------------------------------------------------- processes

local function check_name(name, level)
  if type(name) ~= "string" or name == "" or name:find("[%s:]") then
    error("sim: a process name is a non-empty string without spaces or ':'", level + 1)
  end
end

function Sim:_live(name, level)
  local p = self.procs[name]
  if p == nil then error("sim: no process named '" .. tostring(name) .. "'", level + 1) end
  return p
end

-- net:spawn(name, script, ...): runs the script as `luacomm script ...`.
function Sim:spawn(name, script, ...)
  check_name(name, 2)
  if type(script) ~= "string" then error("bad argument #2 to 'spawn' (script path expected)", 2) end
  local old = self.procs[name]
  if old and not old.dead then error("sim: a process named '" .. name .. "' is running", 2) end
  local f = io.open(script, "r")
  if not f then error("sim: cannot open script '" .. script .. "'", 2) end
  f:close()
  local p = proc_mod.new(self, name, script, pack(...))
  self.procs[name] = p
  if not old then self.order[#self.order + 1] = name end
  p:boot()
  return self
end

-- net:crash(name, [{ silent = true }]): the process dies; its state is lost.
function Sim:crash(name, opts)
  self:_live(name, 2):crash(opts and opts.silent)
  return self
end

-- net:restart(name): reruns the script of a crashed (or running) process
-- from scratch, with the same arguments.
function Sim:restart(name)
  local old = self:_live(name, 2)
  if not old.dead then old:crash() end
  if not old.script then error("sim: '" .. name .. "' is a client; make a new one instead", 2) end
  local p = proc_mod.new(self, name, old.script, old.args, old.opts)
  self.procs[name] = p
  p:boot()
  return self
end

-- net:stop(name): a graceful stop, as SIGTERM.
function Sim:stop(name)
  self:_live(name, 2):stop()
  return self
end

-- net:reload(name) -> true | false, err: as SIGHUP, with the file's
-- current code.
function Sim:reload(name)
  local p = self:_live(name, 2)
  if p.dead then return false, "the process is not running" end
  self.world:trace("reload %s", name)
  local t = self.world:spawn(p, function() return p:reload() end)
  local _, ok, err = t:join()
  return ok, err
end

-- net:client(name, addr, [opts]) -> a luacomm.node named name dialling
-- addr (opts go to node.new), once its link is up and the routes it was
-- sent have arrived (or after opts.wait virtual seconds, default 10).
function Sim:client(name, addr, opts)
  check_name(name, 2)
  if self.procs[name] and not self.procs[name].dead then error("sim: a process named '" .. name .. "' is running", 2) end
  local p = proc_mod.new(self, name, nil)
  self.procs[name] = p
  self.order[#self.order + 1] = name
  self.world:trace("client %s %s", name, addr)
  local node = p.require("luacomm.node")
  local o = { name = name, peers = { addr } }
  for k, v in pairs(opts or {}) do if k ~= "wait" then o[k] = v end end
  local n = node.new(o)
  assert(n:start())
  local w = self.world
  local deadline = w.now + (opts and opts.wait or 10)
  while w.now < deadline do
    local up = false
    for _, peer in pairs(n:peers()) do if peer.state == "up" then up = true end end
    if up then break end
    w:sleep(0.01)
  end
  w:sleep(4 * self.net.lat_max + 0.001) -- the routes the peer sends on link-up
  return n
end

---------------------------------------------------------------- faults

function Sim:latency(min, max)
  max = max or min
  if type(min) ~= "number" or type(max) ~= "number" or min < 0 or max < min then
    error("sim: latency(min, max) needs 0 <= min <= max", 2)
  end
  self.net.lat_min, self.net.lat_max = min, max
  self.world:trace("latency %g %g", min, max)
  return self
end

function Sim:loss(p)
  self.net.loss = probability(p, "loss")
  self.world:trace("loss %g", p)
  return self
end

function Sim:duplicate(p)
  self.net.dup = probability(p, "duplicate")
  self.world:trace("duplicate %g", p)
  return self
end

function Sim:reorder(p)
  self.net.reorder = probability(p, "reorder")
  self.world:trace("reorder %g", p)
  return self
end

local function group(g, level)
  if type(g) == "string" then return { g } end
  if type(g) ~= "table" then error("sim: a group is a process name or a list of names", level + 1) end
  return g
end

-- net:partition(g1, g2, ...): no traffic between processes of different
-- groups, either way; a process in no group reaches all.
function Sim:partition(...)
  local groups = pack(...)
  local text = {}
  for i = 1, groups.n do
    groups[i] = group(groups[i], 2)
    text[i] = concat(groups[i], " ")
  end
  for i = 1, groups.n do
    for j = 1, groups.n do
      if i ~= j then
        for _, a in ipairs(groups[i]) do
          for _, b in ipairs(groups[j]) do self.net:cut(a, b) end
        end
      end
    end
  end
  self.world:trace("partition %s", concat(text, " | "))
  return self
end

-- net:cut(from, to): one way only — what `from` sends `to` is lost, the
-- other way works.
function Sim:cut(from, to)
  from, to = group(from, 2), group(to, 2)
  for _, a in ipairs(from) do
    for _, b in ipairs(to) do self.net:cut(a, b) end
  end
  self.world:trace("cut %s > %s", concat(from, " "), concat(to, " "))
  return self
end

-- net:skew(name, seconds): steps the wall clock (comm.time, os.time) of
-- the machine `name` runs on by `seconds` (negative: backwards, as an NTP
-- correction may); it stays stepped across restarts. comm.now is
-- monotonic and unaffected.
function Sim:skew(name, seconds)
  check_name(name, 2)
  if type(seconds) ~= "number" then error("bad argument #2 to 'skew' (number expected)", 2) end
  self.skews[name] = (self.skews[name] or 0) + seconds
  self.world:trace("skew %s %g", name, seconds)
  return self
end

function Sim:skew_of(name) return self.skews[name] or 0 end

function Sim:heal()
  self.net:heal()
  self.world:trace("heal")
  return self
end

---------------------------------------------------------------- time and looking in

function Sim:sleep(s)
  if type(s) ~= "number" or s < 0 then error("bad argument #1 to 'sleep' (non-negative number expected)", 2) end
  self.world:sleep(s)
  return self
end

function Sim:now() return self.world.now end

-- net:task(fn, ...): runs fn(...) in a task of the spec's own, beside
-- the spec (e.g. several client requests at once); returns the task
-- (task:join([timeout]) as in luacomm).
function Sim:task(fn, ...)
  return self.world:spawn(self.driver, fn, ...)
end

-- net:comm(): the spec's own simulated luacomm module (tasks, timers,
-- channels, listen/connect on the simulated network), as a script's
-- `require "luacomm"` is.
function Sim:comm()
  return self.driver.require("luacomm")
end

-- net:random([m, [n]]): from the simulation's seeded generator, as
-- math.random — for scenarios that pick their faults from the seed.
function Sim:random(m, n)
  return self.world.random(m, n)
end

-- The event trace, one event a line.
function Sim:trace() return self.world:render() end

-- A process's log lines ("time [level] msg"), oldest first.
function Sim:logs(name)
  local out = {}
  for i, l in ipairs(self:_live(name, 2).logs) do out[i] = l end
  return out
end

-- The service's state table and module table (nil for a plain script).
function Sim:state(name) return self:_live(name, 2).state end
function Sim:service(name) return self:_live(name, 2).service end

-- comm.stats() of a process, or totals over the running ones.
function Sim:stats(name)
  if name then return self:_live(name, 2):stats() end
  local total = {}
  for _, n in ipairs(self.order) do
    local p = self.procs[n]
    if not p.dead then
      for k, v in pairs(p:stats()) do total[k] = (total[k] or 0) + v end
    end
  end
  return total
end

-- Names of the processes (in the order they first appeared) and whether each runs.
function Sim:processes()
  local out = {}
  for i, n in ipairs(self.order) do out[i] = { name = n, running = not self.procs[n].dead } end
  return out
end

-- A module as the process sees it (require inside that process).
function Sim:require(name, module)
  return self:_live(name, 2).require(module)
end

-- Frames delivered so far (what the bench counts).
function Sim:delivered() return self.net.delivered end

return M
