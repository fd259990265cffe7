-- Helpers for luacomm specs: drive the loop with a deadline, wait for
-- conditions, and run the luacomm host as a real process.
local comm = require "luacomm"
local core = require "luacomm.core"
-- the installed test kit: processes, waits, the proxy (docs/TESTING.md)
local testing = require "luacomm.testing"

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
H.wait_until = testing.wait_until

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

local readfile = testing.readfile
H.readfile = readfile
local shquote = testing.shquote
H.shquote = shquote
H.tmpdir = testing.tmpdir
H.writefile = testing.writefile

---------------------------------------------------------------- processes

-- Starts `luacomm args...` (or any argv with opts.argv) in the background
-- with stdout/stderr captured (luacomm.testing's process: stdout(),
-- stderr(), signal(), status(), wait(), wait_output(), kill()).
-- opts.env: extra "K=V" strings; opts.stdin: a file to read.
function H.spawn_host(args, opts)
  opts = opts or {}
  return testing.spawn(opts.argv or { H.BIN, table.unpack(args) },
                       { env = opts.env, stdin = opts.stdin, cwd = opts.cwd or H.ROOT })
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

-- Whether [::1] can be bound on this machine (open: comm.listen or
-- comm.udp); an IPv6 spec without it is pending with H.NO_IPV6.
H.NO_IPV6 = "no IPv6 loopback on this machine: [::1] cannot be bound"
function H.has_ipv6(open)
  local probe = open("[::1]:0")
  if not probe then return false end
  probe:close()
  return true
end

-- How many times pattern pat matches in s (log lines, say).
function H.count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

H.core = core
return H
