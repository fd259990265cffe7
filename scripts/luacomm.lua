-- luacomm: the public module. Mechanism lives in the C module luacomm.core
-- (scheduler, timers, sockets); this file adds the policy that is easier to
-- read in Lua: comm.run, channels, serve, JSON, logging.
local core = require "luacomm.core"
local cjson = require "cjson"

local select, type, error, xpcall, pcall = select, type, error, xpcall, pcall
local traceback, format, unpack = debug.traceback, string.format, table.unpack

local M = {}
M._VERSION = (core.versions())

-- Straight from C: these already follow the contract's conventions.
for _, name in ipairs{ "sleep", "yield", "now", "time", "stats", "running", "cond", "limits" } do
  M[name] = core[name]
end

local function pack(...) return { n = select("#", ...), ... } end

-- comm.worker() -> id, count: which of the `luacomm --workers N` processes
-- this is (the host publishes it in the registry); 1, 1 otherwise.
local worker = debug.getregistry()["luacomm.worker"]
function M.worker()
  if worker then return worker[1], worker[2] end
  return 1, 1
end

-- Under --workers, every listener shares its port with the other workers
-- (SO_REUSEPORT), whatever the script asked: the kernel spreads the
-- connections over the workers.
local listen = core.listen
if worker then
  listen = function(addr, opts)
    if opts ~= nil and type(opts) ~= "table" then return core.listen(addr, opts) end -- misuse: core says why
    local o = { reuseport = true }
    for k, v in pairs(opts or {}) do o[k] = v end
    o.reuseport = true
    return core.listen(addr, o)
  end
end

---------------------------------------------------------------- misuse, where it happens

-- While a reload runs a service's top level again (its staging), the
-- loader sets M._staging to the task doing it. A timer, task or listener
-- started there would be started once more by every reload, so the call
-- raises at the user's line and the reload fails, old code still serving.
M._staging = nil
local function staging_check(name)
  local t = M._staging
  if t and core.running() == t then
    error(format("comm.%s at the top level of a service would run again on every reload: "
                 .. "move it into M.start (which runs once)", name), 3)
  end
end

-- Errors of the C calls name them as luacomm.core's internals and point at
-- no line. Setup calls re-raise them at the caller's line, named as the
-- user wrote them: "file:line: bad argument #1 to 'listen' (...)".
local function user_error(name, e)
  if type(e) ~= "string" then error(e, 0) end
  error((e:gsub("^(bad argument #%d+ to ')[^']*'", "%1" .. name .. "'")), 3)
end

local function check_opts(name, i, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(format("bad argument #%d to '%s' (options table expected, got %s)", i, name, type(opts)), 3)
  end
end

local function setup_call(name, fn, opts_index, staged)
  return function(...)
    if staged then staging_check(name) end
    if opts_index then check_opts(name, opts_index, (select(opts_index, ...))) end
    local r = pack(pcall(fn, ...))
    if not r[1] then user_error(name, r[2]) end
    return unpack(r, 2, r.n)
  end
end

M.listen = setup_call("listen", listen, 2, true)
M.connect = setup_call("connect", core.connect, 2, false)
M.udp = setup_call("udp", core.udp, nil, true)
M.after = setup_call("after", core.after, nil, true)
M.every = setup_call("every", core.every, nil, true)

local core_spawn = core.spawn
function M.spawn(...)
  if M._staging then staging_check("spawn") end
  return core_spawn(...)
end

-- Output that closed connections still hold would be lost if the script
-- ended right after comm.run: flush it first, within the time a host's
-- graceful stop gives it by default. The core signals when the last one
-- has gone.
local LINGER = 5
local function flush_closed()
  if core.stats().lingering == 0 then return end
  core.loop(core.spawn(core.drained, "lingering", LINGER))
end

-- comm.run(fn, ...): from plain Lua, runs fn as a task and drives the loop
-- until it returns; returns its results or raises its error with traceback.
function M.run(fn, ...)
  if type(fn) ~= "function" then error("bad argument #1 to 'run' (function expected)", 2) end
  if core.running() then
    error("luacomm: comm.run called inside a task, where the loop is already running; "
          .. "call the function directly instead (in the luacomm command the script is already a task: drop comm.run)", 2)
  end
  local task = core.spawn(function(...) return xpcall(fn, traceback, ...) end, ...)
  local ok, why = core.loop(task)
  if not ok then
    task:cancel()
    error("luacomm.run: " .. why .. ": the task waits for something nothing pending can bring", 2)
  end
  flush_closed()
  if task:status() ~= "done" then return end -- ended early by comm.stop()
  local r = pack(task:join())
  if not r[2] then error(r[3], 0) end
  return unpack(r, 3, r.n)
end

-- The host's part (scripts/luacomm/host.lua) comes through the hooks it
-- gave core.set_host; under stock Lua there are none.

-- comm.stop([status]): the host's graceful stop, else the end of comm.run.
function M.stop(status)
  if status ~= nil and math.type(status) ~= "integer" then
    error("bad argument #1 to 'stop' (integer expected)", 2)
  end
  local stop = core.host("stop")
  if stop then return stop(status) end
  return core.stop()
end

-- comm.stopping(): true once a graceful stop has begun, so long-running
-- loops can wind down instead of starting new work — a node stops
-- redialling its peers.
function M.stopping()
  local stopping = core.host("stopping")
  return stopping ~= nil and stopping() == true
end

-- comm.reload(): the host's reload; true | false, err.
function M.reload()
  local reload = core.host("reload")
  if reload then return reload() end
  return false, "reload needs the luacomm host"
end

-- A connection's task: the handler, and the connection closed when it
-- returns (or fails: the error is logged by the scheduler). One function
-- for every connection, not a closure each: idle connections add up.
local function serve_conn(handler, c)
  local _ <close> = c
  return handler(c)
end

-- comm.serve(addr, handler, [opts]): a task per connection (serve_conn).
function M.serve(addr, handler, opts)
  if type(handler) ~= "function" then error("bad argument #2 to 'serve' (function expected)", 2) end
  staging_check("serve")
  check_opts("serve", 3, opts)
  local fine, listener, err = pcall(listen, addr, opts)
  if not fine then user_error("serve", listener) end
  if not listener then return nil, err end
  core.spawn(function()
    while true do
      local conn = listener:accept()
      if not conn then return end -- closed
      core.spawn(serve_conn, handler, conn)
    end
  end)
  return listener
end

---------------------------------------------------------------- channels

local Channel = {}
Channel.__index = Channel

-- comm.channel([capacity]): a FIFO between tasks. capacity nil = unbounded.
function M.channel(capacity)
  if capacity ~= nil and (math.type(capacity) ~= "integer" or capacity < 1) then
    error("bad argument #1 to 'channel' (positive integer expected)", 2)
  end
  return setmetatable({ _items = {}, _head = 1, _tail = 0, _cap = capacity,
                        _readable = core.cond(), _writable = core.cond() }, Channel)
end

function Channel:_len() return self._tail - self._head + 1 end

-- Wakes every comm.select watching this channel: something changed.
function Channel:_notify()
  local w = self._watchers
  if w == nil then return end
  for sel in pairs(w) do sel:fire() end
end

-- comm.select registers itself while it waits on this channel.
function Channel:_watch(sel, on)
  local w = self._watchers
  if w == nil then w = {}; self._watchers = w end
  w[sel] = on or nil
end

function Channel:_add(v)
  self._tail = self._tail + 1
  self._items[self._tail] = v
  self._readable:signal()
  self:_notify()
end

function Channel:_take()
  local v = self._items[self._head]
  self._items[self._head] = nil
  self._head = self._head + 1
  self._writable:signal()
  if self:_len() > 0 then self._readable:signal() end -- pass the turn on
  self:_notify()
  return v
end

-- A task whose puts and gets never wait still lets the others run now and
-- then (core.turn: every few dozen calls it yields once).
local turn = core.turn

-- ch:put(v) -> true | nil, "closed". Yields while the channel is full.
function Channel:put(v)
  turn()
  while not self._closed and self._cap and self:_len() >= self._cap do
    self._writable:wait()
  end
  if self._closed then return nil, "closed" end
  self:_add(v)
  return true
end

-- ch:try_put(v) -> true | nil, "full" | nil, "closed". Never yields.
function Channel:try_put(v)
  if self._closed then return nil, "closed" end
  if self._cap and self:_len() >= self._cap then return nil, "full" end
  self:_add(v)
  return true
end

-- ch:get([timeout]) -> v | nil, "timeout" | nil, "closed" (once drained).
function Channel:get(timeout)
  turn()
  local deadline = timeout and core.now() + timeout
  while self:_len() == 0 do
    if self._closed then return nil, "closed" end
    local left = deadline and deadline - core.now()
    if left and left <= 0 then return nil, "timeout" end
    self._readable:wait(left)
  end
  return self:_take()
end

-- ch:try_get() -> v | nil, "empty" | nil, "closed" (once drained). Never yields.
function Channel:try_get()
  if self:_len() > 0 then return self:_take() end
  if self._closed then return nil, "closed" end
  return nil, "empty"
end

function Channel:close()
  self._closed = true
  self._readable:broadcast()
  self._writable:broadcast()
  self:_notify()
end

function Channel:len() return self:_len() end
function Channel:cap() return self._cap end
function Channel:closed() return self._closed == true end
function Channel:__len() return self:_len() end

---------------------------------------------------------------- crypto

-- OpenSSL's, for authenticating peers: nothing here is hand-written.
M.crypto = {
  hmac_sha256 = core.hmac_sha256,          -- (key, data) -> 32 raw bytes
  random_bytes = core.random_bytes,        -- (n <= 1024) -> n bytes (RAND_bytes)
  equal_consttime = core.equal_consttime,  -- (a, b) -> boolean (CRYPTO_memcmp)
}

-- comm.select(cases, [timeout]): see scripts/luacomm/select.lua.
M.select = require("luacomm.select").select

---------------------------------------------------------------- JSON

local json = cjson.new()
json.encode_invalid_numbers(false)
M.json = {
  null = json.null,
  -- raises on a value JSON cannot hold (a function, NaN, a cycle)
  encode = function(v)
    local ok, s = pcall(json.encode, v)
    if ok then return s end
    -- blame the caller's line, not this file's
    error("json.encode: " .. tostring(s):gsub("^.-:%d+: ", ""), 2)
  end,
  -- never raises: nil, err on bad input
  decode = function(s)
    if type(s) ~= "string" then return nil, "expected a string, got " .. type(s) end
    local ok, v = pcall(json.decode, s)
    if ok then return v end
    return nil, (tostring(v):gsub("^.-:%d+: ", ""))
  end,
}

---------------------------------------------------------------- logging

-- The level is the core's (the host's sink does not filter): a record the
-- core would drop is not even formatted.
M.log = {}
for rank, name in ipairs(core.log_levels()) do
  M.log[name] = function(fmt, ...)
    local _, min = core.log_level()
    if rank < min then return end
    core.log(name, select("#", ...) > 0 and format(fmt, ...) or tostring(fmt))
  end
end
function M.log.level(l) return (core.log_level(l)) end

---------------------------------------------------------------- metrics

-- comm.metrics: loaded on first use, so a script that never asks for it
-- pays nothing (scripts/luacomm/metrics.lua).
setmetatable(M, { __index = function(t, k)
  if k ~= "metrics" then return nil end
  local m = require "luacomm.metrics"
  rawset(t, k, m)
  return m
end })

return M
