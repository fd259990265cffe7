-- luacomm.sim.proc: one simulated process — what `luacomm SCRIPT ARGS...`
-- is, inside a simulation.
--
-- Each process has its own globals and its own package.loaded, so its
-- `require "luacomm"` is a fresh copy of scripts/luacomm.lua built on a
-- simulated luacomm.core (this process's tasks, timers and connections on
-- the simulated clock and network), and every other luacomm.* module
-- (luacomm.node and its parts, luacomm.loader) is loaded again from its
-- file for this process. So the code under test is the real library; only
-- the C core underneath is simulated.
--
-- Determinism: the globals of a process give `pairs` an order that does
-- not depend on the table's hash layout (keys sorted: numbers, strings,
-- booleans, then objects by creation), `math.random` draws from the
-- simulation's seeded generator, `os.time`/`os.clock` read the virtual
-- clock, and comm.json.encode sorts object keys.
local simjson = require "luacomm.sim.json"

local type, pairs, ipairs, next, select, tostring, error = type, pairs, ipairs, next, select, tostring, error
local setmetatable, getmetatable, rawget = setmetatable, getmetatable, rawget
local pack, unpack, sort, concat = table.pack, table.unpack, table.sort, table.concat
local format, traceback, floor = string.format, debug.traceback, math.floor

local M = {}

-- Virtual wall clock: comm.time() is EPOCH + the virtual clock.
M.EPOCH = 1700000000

local outer_require = require
local outer_package = package

local LEVELS = { debug = 0, info = 1, warn = 2, error = 3 }

-- loadfile with env, compiling each distinct file text once: every
-- process of every run loads the same library (a thousand seeds of a
-- five-node cluster compiled it twenty thousand times). Bytecode loads in
-- a twentieth of the time; keyed by the text, so an edited file is
-- compiled again.
local compiled, ncompiled = {}, 0
local function load_file(file, env)
  local f, err = io.open(file, "rb")
  if not f then return nil, "cannot open " .. tostring(err) end
  local text = f:read("a")
  f:close()
  local code = compiled[text]
  if code then return load(code, "@" .. file, "b", env) end
  local chunk, lerr = load(text, "@" .. file, "t", env)
  if not chunk then return nil, lerr end
  if ncompiled < 256 then
    ncompiled = ncompiled + 1
    compiled[text] = string.dump(chunk)
  end
  return chunk
end
M.load_file = load_file

local Proc = {}
Proc.__index = Proc

---------------------------------------------------------------- deterministic pairs

local RANK = { number = 1, string = 2, boolean = 3 }

local function make_pairs(world)
  local function id(v) return world:id(v) end
  local function less(a, b)
    local ta, tb = type(a), type(b)
    local ra, rb = RANK[ta] or 4, RANK[tb] or 4
    if ra ~= rb then return ra < rb end
    if ra == 4 then return id(a) < id(b) end
    if ta == "boolean" then return b and not a end
    return a < b
  end
  return function(t)
    local mt = getmetatable(t)
    if mt and type(mt) == "table" and rawget(mt, "__pairs") then return mt.__pairs(t) end
    local keys, n, kind = {}, 0, nil
    for k in next, t do
      n = n + 1
      keys[n] = k
      local tk = type(k)
      if kind == nil then kind = tk elseif kind ~= tk then kind = false end
    end
    if n > 1 then
      if kind == "string" or kind == "number" then sort(keys) else sort(keys, less) end
    end
    local i = 0
    return function()
      while true do
        i = i + 1
        local k = keys[i]
        if k == nil then return nil end
        local v = t[k]
        if v ~= nil then return k, v end -- a key removed meanwhile is skipped, as next would
      end
    end, t, nil
  end
end

---------------------------------------------------------------- the process

-- M.new(sim, name, script, args): not started; see Proc:boot.
-- args = { n = ..., ... }; script nil for a process driven by the spec.
function M.new(sim, name, script, args, opts)
  local self = setmetatable({
    sim = sim, world = sim.world, net = sim.net, name = name, script = script,
    args = args or { n = 0 }, opts = opts or {},
    tasks = {}, ntasks = 0, timers = {}, ntimers = 0, conns = {}, nconns = 0, listeners = {}, nlisteners = 0,
    logs = {}, level = sim.log_level or "info",
    counters = { frames_in = 0, frames_out = 0, bytes_in = 0, bytes_out = 0, reloads = 0,
                 reload_failures = 0, task_errors = 0, refused = 0, tasks_spawned = 0 },
  }, Proc)
  self:_make_env()
  return self
end

function Proc:add_task(t)
  self.tasks[t] = true
  self.ntasks = self.ntasks + 1
  self.counters.tasks_spawned = self.counters.tasks_spawned + 1
end
function Proc:remove_task(t)
  if self.tasks[t] then self.tasks[t] = nil; self.ntasks = self.ntasks - 1 end
end
function Proc:timer_started(t) self.timers[t] = true; self.ntimers = self.ntimers + 1 end
function Proc:timer_done(t)
  if self.timers[t] then self.timers[t] = nil; self.ntimers = self.ntimers - 1 end
end
function Proc:add_conn(c) self.conns[c] = true; self.nconns = self.nconns + 1 end
function Proc:remove_conn(c)
  if self.conns[c] then self.conns[c] = nil; self.nconns = self.nconns - 1 end
end
function Proc:count_conns() return self.nconns end
function Proc:add_listener(l) self.listeners[l] = true; self.nlisteners = self.nlisteners + 1 end
function Proc:remove_listener(l)
  if self.listeners[l] then self.listeners[l] = nil; self.nlisteners = self.nlisteners - 1 end
end

-- comm.stats() of this process.
function Proc:stats()
  local c = self.counters
  return { tasks = self.ntasks, timers = self.ntimers, conns = self.nconns, listeners = self.nlisteners,
           frames_in = c.frames_in, frames_out = c.frames_out, bytes_in = c.bytes_in, bytes_out = c.bytes_out,
           reloads = c.reloads, reload_failures = c.reload_failures, task_errors = c.task_errors,
           refused = c.refused, tasks_spawned = c.tasks_spawned, lingering = 0, udp = 0, tls_failures = 0 }
end

-- A log record: kept with the process and in the trace, at virtual time.
function Proc:log(level, msg)
  if (LEVELS[level] or 3) < LEVELS[self.level] then return end
  local w = self.world
  local line = format("%.6f [%s] %s", w.now, level, msg)
  self.logs[#self.logs + 1] = line
  w:trace("log %s [%s] %s", self.name, level, msg)
  if self.sim.echo_logs then io.stderr:write(self.name, " ", line, "\n") end
end

function Proc:task_failed(_, tb)
  self.counters.task_errors = self.counters.task_errors + 1
  self:log("error", "task failed: " .. tb)
end

-- Objects of a kind, in creation order (so a crash ends them in an order
-- that does not depend on hashing).
function Proc:_sorted(set)
  local list, w = {}, self.world
  for x in next, set do list[#list + 1] = x end
  sort(list, function(a, b) return w:id(a) < w:id(b) end)
  return list
end

---------------------------------------------------------------- the simulated core

local function not_simulated(what)
  return function() error("not simulated: " .. what, 2) end
end

local VERSION = (function()
  local ok, core = pcall(outer_require, "luacomm.core")
  return ok and (core.versions()) or "0.0.0"
end)()

function Proc:_make_core()
  local w, net, proc = self.world, self.net, self
  local core = {}
  function core.spawn(fn, ...) return w:spawn(proc, fn, ...) end
  function core.sleep(s) return w:sleep(s) end
  function core.yield() return w:yield() end
  function core.running()
    local t = w.current
    if t and coroutine.running() == t.co then return t end
    return nil
  end
  function core.now() return w.now end
  function core.time() return M.EPOCH + w.now + proc.sim:skew_of(proc.name) end
  function core.after(s, fn, ...) return w:timer(proc, s, nil, fn, ...) end
  function core.every(s, fn, ...) return w:timer(proc, s, s, fn, ...) end
  function core.cond() return w:cond() end
  function core.listen(addr, opts) return net:listen(proc, addr, opts) end
  function core.connect(addr, opts) return net:connect(proc, addr, opts) end
  core.udp = not_simulated("comm.udp")
  function core.stats() return proc:stats() end
  function core.count(k)
    if proc.counters[k] == nil then error("bad argument #1 to 'count' (invalid option '" .. tostring(k) .. "')", 2) end
    proc.counters[k] = proc.counters[k] + 1
  end
  function core.log(level, msg)
    if LEVELS[level] == nil then error("bad argument #1 to 'log' (invalid option '" .. tostring(level) .. "')", 2) end
    proc:log(level, tostring(msg))
  end
  -- the level's name and its rank in log_levels()
  function core.log_level(l)
    if l ~= nil then
      if LEVELS[l] == nil then error("bad argument #1 to 'log_level' (invalid option '" .. tostring(l) .. "')", 2) end
      proc.level = l
    end
    return proc.level, LEVELS[proc.level] + 1
  end
  function core.log_levels() return { "debug", "info", "warn", "error" } end
  -- The host's hooks (core.set_host in the real core): this process's.
  local hooks = {
    stop = function(status) proc:stop(status) end,
    stopping = function() return proc.stopping == true end,
    reload = function() return proc:reload() end,
  }
  function core.host(name) return hooks[name] end
  core.set_host = not_simulated("core.set_host (the simulation is the host)")
  -- core.drained(what, [timeout]): nothing lingers on the simulated wire
  function core.drained() return true end
  function core.versions() return VERSION, _VERSION, "simulated" end
  function core.loop() error("luacomm: the loop is already running (a simulated process runs inside sim.run)", 2) end
  function core.stop(status) proc:stop(status) end
  function core.shutdown(step)
    if step == "listeners" or step == "all" then
      for _, l in ipairs(proc:_sorted(proc.listeners)) do l:close() end
    end
    if step == "conns" or step == "all" then
      for _, c in ipairs(proc:_sorted(proc.conns)) do c:close() end
    end
    return 0
  end
  function core.max_io() return 0 end
  -- core.turn(): a task whose calls never wait yields once every few
  -- dozen of them (channels, select), so the others run
  local turns = 0
  function core.turn()
    turns = turns + 1
    if turns % 32 == 0 and w.current and coroutine.running() == w.current.co and coroutine.isyieldable() then
      w:yield()
    end
  end
  -- Crypto: the real module's functions (pure), but random bytes come
  -- from the simulation's generator.
  local ok, real = pcall(outer_require, "luacomm.core")
  core.hmac_sha256 = ok and real.hmac_sha256 or not_simulated("hmac_sha256 (no luacomm.core)")
  core.equal_consttime = ok and real.equal_consttime or function(a, b) return a == b end
  function core.random_bytes(n)
    if math.type(n) ~= "integer" or n < 0 or n > 1024 then
      error("bad argument #1 to 'random_bytes' (0..1024 expected)", 2)
    end
    local t = {}
    for i = 1, n do t[i] = string.char(w.random(0, 255)) end
    return concat(t)
  end
  return core
end

-- The process's `require "luacomm"`: the real scripts/luacomm.lua over the
-- simulated core (whose host hooks are this process's), with a
-- deterministic encoder.
function Proc:_load_comm()
  local file = assert(outer_package.searchpath("luacomm", outer_package.path))
  local comm = assert(load_file(file, self.env))("luacomm", file)
  comm.json.encode = function(v)
    local ok, s = pcall(simjson.encode, v)
    if ok then return s end
    error("json.encode: " .. tostring(s):gsub("^.-:%d+: ", ""), 2)
  end
  comm.worker = function() return 1, 1 end
  comm.metrics = setmetatable({}, { __index = function(_, k) return not_simulated("comm.metrics." .. k) end })
  return comm
end

-- The node library's frames are encoded by lua-cjson, whose key order
-- follows the hash layout (so it may differ from one process to the
-- next): their text never decides anything — every receiver decodes
-- them — and the trace shows each JSON frame with its keys sorted
-- (luacomm.sim's canon). What a script encodes itself goes through the
-- deterministic encoder. Sorting the keys of every frame was a fifth of
-- the simulation's time. The node library's modules take the encoder
-- when they load (`local encode = json.encode`): while one of them loads,
-- comm.json.encode is the wire's.
local wire = require("cjson").new()
wire.encode_invalid_numbers(false)
local wire_encode = wire.encode
local function fast_encode(v)
  local ok, s = pcall(wire_encode, v)
  if ok then return s end
  error("json.encode: " .. tostring(s):gsub("^.-:%d+: ", ""), 2)
end

local function is_node_module(name)
  return name == "luacomm.node" or name:sub(1, 13) == "luacomm.node."
end

---------------------------------------------------------------- globals and require

local BASE = { "assert", "error", "getmetatable", "ipairs", "next", "pcall", "rawequal", "rawget", "rawlen",
               "rawset", "select", "tonumber", "tostring", "type", "xpcall", "collectgarbage",
               "coroutine", "debug", "string", "table", "utf8", "io" }

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

function Proc:_make_env()
  local w, proc = self.world, self
  local env = {}
  for _, k in ipairs(BASE) do env[k] = _G[k] end
  env._G, env._VERSION = env, _VERSION
  env.pairs = make_pairs(w)
  env.setmetatable = function(t, mt)
    if type(t) == "table" then w:id(t) end
    return setmetatable(t, mt)
  end
  local m = copy(math)
  m.random = w.random
  m.randomseed = function() end
  env.math = m
  local o = copy(os)
  o.time = function(t)
    if t ~= nil then return os.time(t) end
    return floor(M.EPOCH + w.now + proc.sim:skew_of(proc.name))
  end
  o.clock = function() return w.now end
  o.date = function(fmt, t) return os.date(fmt, t or floor(M.EPOCH + w.now + proc.sim:skew_of(proc.name))) end
  o.exit = not_simulated("os.exit")
  o.execute = not_simulated("os.execute")
  env.os = o
  env.print = function(...)
    local n = select("#", ...)
    local parts = { ... }
    for i = 1, n do parts[i] = tostring(parts[i]) end
    local text = concat(parts, "\t", 1, n)
    w:trace("out %s %s", proc.name, text)
    if proc.sim.print then io.stdout:write(text, "\n") end
  end
  env.load = function(...)
    local chunk, name, mode, e = ...
    if select("#", ...) < 4 then e = env end
    return load(chunk, name, mode, e)
  end
  env.loadfile = function(...)
    local file, mode, e = ...
    if select("#", ...) < 3 then e = env end
    return loadfile(file, mode, e)
  end
  env.dofile = function(file)
    local f = assert(loadfile(file, "bt", env))
    return f()
  end
  local a = { [0] = self.script }
  for i = 1, self.args.n do a[i] = self.args[i] end
  env.arg = a
  self.env = env
  self:_make_package()
end

-- package and require for the process: preload (the simulated core and
-- luacomm, stubs for what is not simulated), then Lua files on the path
-- (luacomm.node.* and the script's own modules, all with this process's
-- globals), then the host's own require for the rest (lua-cjson, ...).
function Proc:_make_package()
  local env, proc = self.env, self
  local pkg = { loaded = {}, preload = {}, config = outer_package.config, cpath = outer_package.cpath,
                searchpath = outer_package.searchpath }
  local dir = self.script and (self.script:match("^(.*)/[^/]*$") or ".")
  local dirs = {}
  if dir then dirs[#dirs + 1] = dir end
  for _, d in ipairs(self.opts.includes or {}) do dirs[#dirs + 1] = d end
  local path = {}
  for _, d in ipairs(dirs) do path[#path + 1] = d .. "/?.lua;" .. d .. "/?/init.lua" end
  path[#path + 1] = outer_package.path
  pkg.path = concat(path, ";")
  self.dirs = dirs
  pkg.loaded._G = env
  for _, k in ipairs{ "string", "table", "math", "os", "io", "coroutine", "debug", "utf8" } do pkg.loaded[k] = env[k] end
  pkg.preload["luacomm.core"] = function() return proc:_make_core() end
  pkg.preload["luacomm"] = function() return proc:_load_comm() end
  pkg.preload["luacomm.host"] = not_simulated("luacomm.host (the sim is the host)")
  pkg.preload["luacomm.http"] = function()
    return setmetatable({}, { __index = function(_, k) return not_simulated("http." .. k) end })
  end
  pkg.preload["luacomm.sim"] = not_simulated("luacomm.sim inside a simulated process")
  pkg.searchers = {
    function(name)
      local f = pkg.preload[name]
      if f then return f, ":preload:" end
      return "\n\tno field package.preload['" .. name .. "']"
    end,
    function(name)
      local file, err = outer_package.searchpath(name, pkg.path)
      if not file then return "\n\t" .. err:gsub("^\n\t", "") end
      local chunk, lerr = load_file(file, env)
      if not chunk then
        error(format("error loading module '%s' from file '%s':\n\t%s", name, file, lerr), 3)
      end
      return chunk, file
    end,
    function(name)
      if name:match("^luacomm") then return "\n\tnot a simulated module" end
      local ok, v = pcall(outer_require, name)
      if not ok then return "\n\t" .. tostring(v) end
      return function() return v end, ":host:"
    end,
  }
  local loaded = pkg.loaded
  local req
  function req(name)
    if type(name) ~= "string" then error("bad argument #1 to 'require' (string expected)", 2) end
    local v = loaded[name]
    if v ~= nil then return v end
    local msg = {}
    for _, searcher in ipairs(pkg.searchers) do
      local loader, extra = searcher(name)
      if type(loader) == "function" then
        local json, det
        if is_node_module(name) then
          json = req("luacomm").json
          det = json.encode
          json.encode = fast_encode
        end
        local ok, r = pcall(loader, name, extra)
        if json then json.encode = det end
        if not ok then error(r, 0) end
        if r ~= nil then loaded[name] = r elseif loaded[name] == nil then loaded[name] = true end
        return loaded[name], extra
      elseif type(loader) == "string" then
        msg[#msg + 1] = loader
      end
    end
    error(format("module '%s' not found:%s", name, concat(msg)), 2)
  end
  env.package, env.require = pkg, req
  self.require = function(name) return env.require(name) end
end

---------------------------------------------------------------- life

-- Runs the script as the luacomm host would (CONTRACT §1, §3): the main
-- chunk in a task, then start(state, ...) of a service. A failure at
-- startup ends the process and fails the run.
function Proc:boot()
  local w = self.world
  w:trace("start %s %s", self.name, self.script)
  return w:spawn(self, function()
    local loader = self.require("luacomm.loader")
    self.loader = loader.new(self.dirs)
    self.loader:install()
    local chunk, err = load_file(self.script, self.env)
    if not chunk then return self:fail(err) end
    local r = pack(xpcall(chunk, traceback, unpack(self.args, 1, self.args.n)))
    if not r[1] then return self:fail(r[2]) end
    if type(r[2]) ~= "table" or self.stopping then return end
    self.service, self.state = r[2], {}
    if type(self.service.start) == "function" then
      local ok, e = xpcall(self.service.start, traceback, self.state, unpack(self.args, 1, self.args.n))
      if not ok then return self:fail(e) end
    end
  end)
end

function Proc:fail(err)
  self:log("error", tostring(err))
  self.sim:failed(format("process %s failed at startup: %s", self.name, tostring(err)))
  self:crash()
end

-- The host's reload (CONTRACT §4): true | false, err; logged and counted.
function Proc:reload()
  if not self.service then
    local why = "the script is not a service (it returns no table): nothing to reload"
    self:log("warn", "reload: " .. why)
    return false, why
  end
  local ok, result = self.loader:reload(self.script, self.args, self.service, self.state)
  if ok then
    self.counters.reloads = self.counters.reloads + 1
    self:log("info", format("reload ok: %s and %d module(s)", self.script, result))
    return true
  end
  self.counters.reload_failures = self.counters.reload_failures + 1
  self:log("error", "reload failed, old code still serving: " .. tostring(result))
  return false, result
end

-- Ends everything the process has, at once. silent: as a machine that
-- loses power — no end-of-stream reaches the peers, they must notice the
-- silence. Otherwise as a killed process, whose kernel closes its sockets.
function Proc:crash(silent)
  if self.dead then return end
  self.dead = true
  self.world:trace("crash %s%s", self.name, silent and " silent" or "")
  for _, l in ipairs(self:_sorted(self.listeners)) do l:_shut() end
  for _, c in ipairs(self:_sorted(self.conns)) do c:_shut(silent) end
  for _, t in ipairs(self:_sorted(self.timers)) do t:cancel() end
  local me
  for _, t in ipairs(self:_sorted(self.tasks)) do
    if t == self.world.current then me = t else t:cancel() end
  end
  if me then me:cancel() end
end

-- A graceful stop (CONTRACT §5): listeners close, stop(state) runs, the
-- connections close, the process ends.
function Proc:stop()
  if self.stopping or self.dead then return end
  self.stopping = true
  self.world:trace("stop %s", self.name)
  self.world:spawn(self, function()
    for _, l in ipairs(self:_sorted(self.listeners)) do l:close() end
    local svc = self.service
    if svc and type(svc.stop) == "function" then
      local ok, err = xpcall(svc.stop, traceback, self.state)
      if not ok then self:log("error", "stop hook: " .. tostring(err)) end
    end
    for _, c in ipairs(self:_sorted(self.conns)) do c:close() end
    self:crash()
  end)
end

M.Proc = Proc
return M
