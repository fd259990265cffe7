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
for _, name in ipairs{ "spawn", "sleep", "yield", "now", "time", "after", "every",
                       "listen", "connect", "udp", "stats", "running", "limits" } do
  M[name] = core[name]
end

local function pack(...) return { n = select("#", ...), ... } end

-- Output that closed connections still hold would be lost if the script
-- ended right after comm.run: flush it first, within the time a host's
-- graceful stop gives it by default.
local LINGER = 5
local function flush_closed()
  if core.stats().lingering == 0 then return end
  local deadline = core.now() + LINGER
  core.loop(core.spawn(function()
    while core.stats().lingering > 0 and core.now() < deadline do core.sleep(0.002) end
  end))
end

-- comm.run(fn, ...): from plain Lua, runs fn as a task and drives the loop
-- until it returns; returns its results or raises its error with traceback.
function M.run(fn, ...)
  if type(fn) ~= "function" then error("bad argument #1 to 'run' (function expected)", 2) end
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

-- comm.stop([status]): the host replaces _stop with its graceful stop.
M._stop = core.stop
function M.stop(status)
  if status ~= nil and math.type(status) ~= "integer" then
    error("bad argument #1 to 'stop' (integer expected)", 2)
  end
  return M._stop(status)
end

-- comm.stopping(): true once a graceful stop has begun (the host installs
-- the real one), so long-running loops can wind down instead of starting
-- new work — a node stops redialling its peers.
function M.stopping()
  return false
end

-- comm.reload(): the host installs the real one.
function M.reload()
  return false, "reload needs the luacomm host"
end

-- comm.serve(addr, handler, [opts]): a task per connection, closed when the
-- handler returns (or fails: the error is logged by the scheduler).
function M.serve(addr, handler, opts)
  if type(handler) ~= "function" then error("bad argument #2 to 'serve' (function expected)", 2) end
  local listener, err = core.listen(addr, opts)
  if not listener then return nil, err end
  core.spawn(function()
    while true do
      local conn = listener:accept()
      if not conn then return end -- closed
      core.spawn(function(c)
        local _ <close> = c
        return handler(c)
      end, conn)
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

-- ch:put(v) -> true | nil, "closed". Yields while the channel is full.
function Channel:put(v)
  while not self._closed and self._cap and self:_len() >= self._cap do
    self._writable:wait()
  end
  if self._closed then return nil, "closed" end
  self._tail = self._tail + 1
  self._items[self._tail] = v
  self._readable:signal()
  return true
end

-- ch:get([timeout]) -> v | nil, "timeout" | nil, "closed" (once drained).
function Channel:get(timeout)
  local deadline = timeout and core.now() + timeout
  while self:_len() == 0 do
    if self._closed then return nil, "closed" end
    local left = deadline and deadline - core.now()
    if left and left <= 0 then return nil, "timeout" end
    self._readable:wait(left)
  end
  local v = self._items[self._head]
  self._items[self._head] = nil
  self._head = self._head + 1
  self._writable:signal()
  if self:_len() > 0 then self._readable:signal() end -- pass the turn on
  return v
end

function Channel:close()
  self._closed = true
  self._readable:broadcast()
  self._writable:broadcast()
end

function Channel:__len() return self:_len() end

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

local levels = { debug = 0, info = 1, warn = 2, error = 3 }
M.log = {}
for name, rank in pairs(levels) do
  M.log[name] = function(fmt, ...)
    if rank < levels[core.log_level()] then return end
    core.log(name, select("#", ...) > 0 and format(fmt, ...) or tostring(fmt))
  end
end
function M.log.level(l) return core.log_level(l) end

return M
