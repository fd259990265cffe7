-- luacomm.testing: a test kit for programs written on luacomm, installed
-- with the library (docs/TESTING.md). It runs real `luacomm` processes:
--
--   local testing = require "luacomm.testing"
--   local p = testing.start{ script = "node.lua", args = { "7001" }, ready = "listening" }
--   ... p:stdout(), p:stderr(), p:signal("HUP"), p:wait_output("reload ok", "err") ...
--   p:stop()                         -- SIGTERM, then the exit status
--
-- and small clusters of them (testing.cluster). Every process it starts is
-- killed by testing.cleanup(), when a process object goes out of a
-- `local p <close>` scope, or at the latest when Lua exits — a failing
-- spec leaves nothing running. Its fault-injecting proxy is
-- luacomm.testing.proxy.
--
-- Processes are started through /bin/sh with stdout and stderr captured
-- to files in a fresh temporary folder, so they can be read at any time.
-- Waits poll with comm.sleep inside a task (other tasks run meanwhile), or
-- sleep the whole process outside one.
local comm = require "luacomm"
local core = require "luacomm.core"

local type, tostring, ipairs, pairs, error = type, tostring, ipairs, pairs, error
local format, concat = string.format, table.concat

local M = {}
M._VERSION = "0.1.0"

-- The host to run: LUACOMM_BIN, or `luacomm` from PATH.
M.bin = os.getenv("LUACOMM_BIN") or "luacomm"

---------------------------------------------------------------- small tools

local function shquote(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end
M.shquote = shquote

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.readfile = readfile

function M.writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

-- A fresh empty folder under the system's temporary folder.
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. shquote(p)))
  return p
end

-- Polls pred every `step` seconds (default 0.02) until it returns a true
-- value or `timeout` (default 10) passes: that value, or nil, "timeout".
function M.wait_until(pred, timeout, step)
  local deadline = comm.now() + (timeout or 10)
  local sleep = core.running() and comm.sleep or function(s) os.execute("sleep " .. s) end
  while true do
    local v = pred()
    if v then return v end
    if comm.now() >= deadline then return nil, "timeout" end
    sleep(step or 0.02)
  end
end

-- A TCP port on 127.0.0.1 that nothing listens on right now.
function M.free_port()
  local l = assert(comm.listen("127.0.0.1:0"))
  local _, port = l:addr()
  l:close()
  return port
end

---------------------------------------------------------------- processes

local Proc = {}
Proc.__index = Proc
M.Proc = Proc

-- Every process started and not yet known to have ended: cleanup() and
-- the collector below kill them.
local live = {}

function M.cleanup()
  for p in pairs(live) do p:kill() end
end

-- When the Lua state closes (the test runner exits, even after a failure),
-- whatever is still running is killed.
local sentinel = setmetatable({}, { __gc = function() M.cleanup() end })
M._sentinel = sentinel

-- testing.spawn(argv, [opts]) -> process: runs argv (a list: the program
-- and its arguments) in the background. opts: env ({ "K=V", ... } or
-- { K = "V" }), cwd, stdin (a file to read; default /dev/null).
function M.spawn(argv, opts)
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then
    error("bad argument #1 to 'spawn' (a list { program, args... } expected)", 2)
  end
  opts = opts or {}
  local dir = M.tmpdir()
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = shquote(a) end
  local env = {}
  for k, v in pairs(opts.env or {}) do
    env[#env + 1] = type(k) == "number" and v or (k .. "=" .. shquote(v))
  end
  local cmd = format("%s %s <%s >%s 2>%s", #env > 0 and ("env " .. concat(env, " ")) or "", concat(parts, " "),
    shquote(opts.stdin or "/dev/null"), shquote(dir .. "/out"), shquote(dir .. "/err"))
  -- The subshell records the child's pid, waits for it, then its status.
  local status = shquote(dir .. "/status")
  local wrapper = format("(%s & echo $! > %s; wait $!; echo $? > %s.tmp; mv %s.tmp %s) >/dev/null 2>&1 &",
    cmd, shquote(dir .. "/pid"), status, status, status)
  assert(os.execute((opts.cwd and ("cd " .. shquote(opts.cwd) .. " && ") or "") .. wrapper))
  local p = setmetatable({ dir = dir, argv = argv }, Proc)
  local pid = M.wait_until(function() local s = readfile(dir .. "/pid"); return s and tonumber(s) end, 5, 0.005)
  p.pid = assert(pid, "process did not start: " .. concat(argv, " "))
  live[p] = true
  return p
end

-- testing.start(opts) -> process: `luacomm [flags...] script [args...]`,
-- waiting for opts.ready (a Lua pattern) on its stdout or stderr. opts:
-- script (a path) or code (run with -e); args; flags (options before the
-- script, e.g. { "--log-level", "debug" }); ready; ready_in ("out", "err"
-- or "any", the default); timeout (default 10 s); bin (default
-- testing.bin); env; cwd. Raises, with what the process wrote, when it
-- exits or is not ready in time (and kills it).
function M.start(opts)
  if type(opts) ~= "table" or (type(opts.script) ~= "string" and type(opts.code) ~= "string") then
    error("bad argument #1 to 'start' ({ script = path } or { code = string } expected)", 2)
  end
  local argv = { opts.bin or M.bin }
  for _, f in ipairs(opts.flags or {}) do argv[#argv + 1] = f end
  if opts.code then argv[#argv + 1] = "-e"; argv[#argv + 1] = opts.code
  else argv[#argv + 1] = opts.script end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = tostring(a) end
  local p = M.spawn(argv, opts)
  if opts.ready then
    local ok = M.wait_until(function()
      return p:status() ~= nil or p:find(opts.ready, opts.ready_in)
    end, opts.timeout or 10)
    if not ok or not p:find(opts.ready, opts.ready_in) then
      local why = p:status() and ("exited with status " .. p:status()) or "not ready in time"
      p:kill()
      error(format("%s: %s (waiting for %q)\n--- stdout:\n%s--- stderr:\n%s", concat(argv, " "), why,
        opts.ready, p:stdout(), p:stderr()), 2)
    end
  end
  return p
end

function Proc:stdout() return readfile(self.dir .. "/out") or "" end
function Proc:stderr() return readfile(self.dir .. "/err") or "" end

-- The first match of pattern in stdout ("out"), stderr ("err") or either
-- ("any", the default).
function Proc:find(pattern, which)
  if which ~= "err" then
    local m = self:stdout():match(pattern)
    if m or which == "out" then return m end
  end
  return self:stderr():match(pattern)
end

-- Waits for pattern in stdout ("out", the default), stderr ("err") or
-- either ("any"): the match, or nil, "timeout".
function Proc:wait_output(pattern, which, timeout)
  which = which or "out"
  return M.wait_until(function() return self:find(pattern, which) end, timeout or 10)
end

-- Sends a signal by name ("HUP", "TERM", "KILL", "STOP", "CONT").
function Proc:signal(name)
  return os.execute(format("kill -%s %d 2>/dev/null", name, self.pid))
end

-- The exit status, or nil while it runs (128 + N after signal N).
function Proc:status()
  local s = readfile(self.dir .. "/status")
  local n = s and tonumber(s)
  if n then live[self] = nil end
  return n
end

-- Waits for the process to exit: its status, or nil, "timeout".
function Proc:wait(timeout)
  return M.wait_until(function() return self:status() end, timeout or 10)
end

-- SIGTERM (a graceful stop), then waits: the exit status (SIGKILL after
-- timeout, default 10 s).
function Proc:stop(timeout)
  if self:status() then return self:status() end
  self:signal("TERM")
  local st = self:wait(timeout or 10)
  if st then return st end
  self:kill()
  return self:status()
end

-- Ends it for good: SIGCONT (in case it was stopped), SIGTERM, then
-- SIGKILL after 3 s. Idempotent.
function Proc:kill()
  if self:status() then return end
  self:signal("CONT")
  self:signal("TERM")
  local t = os.time()
  while not self:status() and os.time() - t < 3 do os.execute("sleep 0.02") end
  if not self:status() then
    self:signal("KILL")
    self:wait(5)
  end
  live[self] = nil
end
Proc.__close = Proc.kill

---------------------------------------------------------------- clusters

local Cluster = {}
Cluster.__index = Cluster
M.Cluster = Cluster

-- testing.cluster(opts) -> cluster: one luacomm process per name in
-- opts.nodes, each given a free port of its own on 127.0.0.1 before any
-- starts (cluster.port[name], cluster.addr[name] = "127.0.0.1:PORT"), so
-- nodes can name each other. opts.args(name, cluster) -> the node's ARGS;
-- opts.script, flags, ready (default "ready"), ready_in, timeout, env,
-- cwd, bin as for testing.start. Returns once every node is ready; raises
-- (and kills them all) otherwise.
function M.cluster(opts)
  if type(opts) ~= "table" or type(opts.nodes) ~= "table" or #opts.nodes == 0 then
    error("bad argument #1 to 'cluster' ({ script =, nodes = { names } } expected)", 2)
  end
  local self = setmetatable({ opts = opts, names = {}, port = {}, addr = {}, procs = {} }, Cluster)
  for i, name in ipairs(opts.nodes) do
    self.names[i] = name
    self.port[name] = M.free_port()
    self.addr[name] = "127.0.0.1:" .. self.port[name]
  end
  local ok, err = pcall(function()
    for _, name in ipairs(self.names) do self:_spawn(name) end
    for _, name in ipairs(self.names) do self:_ready(name) end
  end)
  if not ok then
    self:stop()
    error(err, 2)
  end
  return self
end

function Cluster:_spawn(name)
  local o = self.opts
  local args = o.args and o.args(name, self) or { self.addr[name] }
  self.procs[name] = M.start{ script = o.script, args = args, flags = o.flags, env = o.env, cwd = o.cwd,
                              bin = o.bin }
end

function Cluster:_ready(name)
  local o, p = self.opts, self.procs[name]
  local ready = o.ready or "ready"
  local ok = M.wait_until(function() return p:status() ~= nil or p:find(ready, o.ready_in) end, o.timeout or 10)
  if not ok or not p:find(ready, o.ready_in) then
    error(format("node %s: %s\n--- stderr:\n%s", name, p:status() and "exited" or "not ready in time",
      p:stderr()), 0)
  end
end

-- The process of a node (stdout, stderr, signal, ...).
function Cluster:proc(name)
  return assert(self.procs[name], "no node " .. tostring(name))
end

-- Kills a node (SIGKILL by default: a crash) and waits for it to be gone.
function Cluster:kill(name, sig)
  local p = self:proc(name)
  p:signal(sig or "KILL")
  if (sig or "KILL") == "KILL" then p:wait(5) end
end

-- Starts a node again, same port and ARGS, as a new process (a new
-- stdout); returns once it is ready.
function Cluster:restart(name)
  local p = self:proc(name)
  if not p:status() then p:kill() end
  self:_spawn(name)
  self:_ready(name)
  return self.procs[name]
end

-- Stops every node (SIGCONT, SIGTERM, then SIGKILL). Idempotent.
function Cluster:stop()
  for _, name in ipairs(self.names) do
    local p = self.procs[name]
    if p then p:kill() end
  end
end
Cluster.__close = Cluster.stop

return M
