-- Helpers for luacomm specs: drive the loop with a deadline, wait for
-- conditions, and run the luacomm host as a real process.
local comm = require "luacomm"
local core = require "luacomm.core"

local H = {}

H.ROOT = os.getenv("LUACOMM_ROOT") or "."
H.BIN = os.getenv("LUACOMM_BIN") or (H.ROOT .. "/build/luacomm")

-- Runs fn in a task under comm.run; fails the spec if it has not finished
-- after `timeout` seconds (default 20) instead of hanging the suite.
function H.run(fn, timeout)
  return comm.run(function()
    local task = comm.spawn(fn)
    local r = table.pack(task:join(timeout or 20))
    if not r[1] then
      task:cancel()
      error(r[2] == "timeout" and ("spec task did not finish within " .. (timeout or 20) .. " s") or r[2], 0)
    end
    return table.unpack(r, 2, r.n)
  end)
end

-- Polls pred every `step` seconds (inside a task) until it returns a true
-- value or `timeout` passes; returns that value, or nil, "timeout".
-- Outside a task it sleeps the whole process instead.
function H.wait_until(pred, timeout, step)
  local deadline = comm.now() + (timeout or 10)
  local sleep = core.running() and comm.sleep or function(s) os.execute("sleep " .. s) end
  while true do
    local v = pred()
    if v then return v end
    if comm.now() >= deadline then return nil, "timeout" end
    sleep(step or 0.02)
  end
end

-- A port nothing listens on right now (bound then released; loopback only).
function H.free_port()
  local l = assert(comm.listen("127.0.0.1:0"))
  local _, port = l:addr()
  l:close()
  return port
end

-- A listener on an ephemeral port and its "host:port".
function H.listen(opts)
  local l = assert(comm.listen("127.0.0.1:0", opts))
  local host, port = l:addr()
  return l, host .. ":" .. port, port
end

-- A connected pair over loopback: client side, server side, listener.
function H.pair(opts)
  local l, addr = H.listen(opts)
  local c = assert(comm.connect(addr, opts))
  local s = assert(l:accept(5))
  return c, s, l
end

-- Closes every non-nil argument.
function H.close_all(...)
  for i = 1, select("#", ...) do
    local x = select(i, ...)
    if x then x:close() end
  end
end

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.readfile = readfile

local function shquote(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end
H.shquote = shquote

local tmpcount = 0
function H.tmpdir()
  tmpcount = tmpcount + 1
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. shquote(p)))
  return p
end

function H.writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

---------------------------------------------------------------- processes

local Proc = {}
Proc.__index = Proc

-- Starts `luacomm args...` (or any argv with opts.argv) in the background
-- with stdout/stderr captured to files. opts.env: extra "K=V" strings;
-- opts.stdin: a file to read.
function H.spawn_host(args, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local argv = opts.argv or { H.BIN, table.unpack(args) }
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = shquote(a) end
  local env = table.concat(opts.env or {}, " ")
  local cmd = ("%s %s <%s >%s 2>%s"):format(env ~= "" and ("env " .. env) or "", table.concat(parts, " "),
    shquote(opts.stdin or "/dev/null"), shquote(dir .. "/out"), shquote(dir .. "/err"))
  -- The subshell records the child's pid, waits for it, then records its status.
  local wrapper = ("(%s & echo $! > %s; wait $!; echo $? > %s.tmp; mv %s.tmp %s) >/dev/null 2>&1 &")
    :format(cmd, shquote(dir .. "/pid"), shquote(dir .. "/status"), shquote(dir .. "/status"),
            shquote(dir .. "/status"))
  assert(os.execute("cd " .. shquote(opts.cwd or H.ROOT) .. " && " .. wrapper))
  local p = setmetatable({ dir = dir }, Proc)
  local pid = H.wait_until(function() local s = readfile(dir .. "/pid"); return s and tonumber(s) end, 5, 0.005)
  p.pid = assert(pid, "process did not start")
  return p
end

function Proc:stdout() return readfile(self.dir .. "/out") or "" end
function Proc:stderr() return readfile(self.dir .. "/err") or "" end

function Proc:signal(name)
  return os.execute(("kill -%s %d 2>/dev/null"):format(name, self.pid))
end

-- The exit status, or nil while it runs.
function Proc:status()
  local s = readfile(self.dir .. "/status")
  return s and tonumber(s)
end

-- Waits (in a task) for the process to exit; its status, or nil, "timeout".
function Proc:wait(timeout)
  return H.wait_until(function() return self:status() end, timeout or 10)
end

-- Waits for `pattern` (a Lua pattern) in stdout ("out") or stderr ("err").
function Proc:wait_output(pattern, which, timeout)
  return H.wait_until(function()
    local s = which == "err" and self:stderr() or self:stdout()
    return s:match(pattern)
  end, timeout or 10)
end

-- Stops it for good (used in `finally`): TERM, then KILL.
function Proc:kill()
  if self:status() then return end
  self:signal("TERM")
  local t = os.time()
  while not self:status() and os.time() - t < 3 do os.execute("sleep 0.05") end
  if not self:status() then self:signal("KILL") end
end

-- Runs the host to completion from plain Lua (no loop needed): status, stdout, stderr.
function H.run_host(args, opts)
  local p = H.spawn_host(args, opts)
  if not p:wait((opts and opts.timeout) or 20) then
    p:signal("KILL")
    error("host did not exit: " .. table.concat(args, " "))
  end
  return p:status(), p:stdout(), p:stderr()
end

-- Starts the host with args (and H.spawn_host's opts), runs fn(proc), and
-- stops the host for good whatever fn did, then re-raises fn's error. In a
-- task it runs there; from plain Lua, in one of its own (H.run, 40 s), so
-- fn may wait on the process.
function H.with_host(args, fn, opts)
  local function body()
    local p = H.spawn_host(args, opts)
    local ok, err = pcall(fn, p)
    p:kill()
    if not ok then error(err, 0) end
  end
  if core.running() then return body() end
  return H.run(body, 40)
end

-- Runs `code` in a fresh lua5.4 that finds this build's modules (the
-- sanitizer run's LD_PRELOAD is inherited through the environment):
-- status, stdout, stderr.
function H.run_lua(code)
  return H.run_host({}, {
    argv = { "lua5.4", "-e", code },
    env = { "LUA_PATH=" .. shquote(package.path), "LUA_CPATH=" .. shquote(package.cpath) },
  })
end

-- Raises if the captured log has an [error] line (Test::Nginx's no_error_log).
function H.assert_no_error_log(text)
  local line = text:match("[^\n]*%[error%][^\n]*")
  if line then error("unexpected error in log: " .. line, 2) end
end

H.core = core
return H
