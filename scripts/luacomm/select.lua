-- luacomm.select: comm.select(cases, [timeout]) — wait for the first of
-- several things: a channel with a value to get or room to put, a
-- connection with a frame to read (or closed), a task that ended, a delay.
--
-- How it waits: a select is a condition its task waits on. Channels know
-- the selects watching them and fire them on every change; a connection
-- or a task gets a small watcher task (conn:readable(), task:join()) that
-- fires it. After each wake-up every case is polled again in list order
-- without yielding, and the first ready one is done then and there, so
-- what select returns is never stale. Watchers are cancelled before it
-- returns (a cancelled conn:readable() takes nothing from the connection).
local core = require "luacomm.core"

local type, error, select, ipairs, pcall, setmetatable = type, error, select, ipairs, pcall, setmetatable
local unpack, format = table.unpack, string.format

local M = {}

local Sel = {}
Sel.__index = Sel

function Sel:fire()
  self.fired = true
  self.cond:signal()
end

local ENDED = { done = true, failed = true, cancelled = true }

-- Whether case c can complete now without waiting.
local function ready(c, now)
  local op, obj = c.op, c.obj
  if op == "get" then return obj:len() > 0 or obj:closed() end
  if op == "put" then
    local cap = obj:cap()
    return obj:closed() or cap == nil or obj:len() < cap
  end
  if op == "recv" or op == "readable" then return obj:closed() or obj:readable(0) end
  if op == "join" then return ENDED[obj:status()] == true end
  return now >= c.deadline -- "after"
end

local function pack(...) return { n = select("#", ...), ... } end

-- Completes a ready case: its results, after the case's index.
local function perform(c)
  local op, obj = c.op, c.obj
  if op == "get" then return pack(obj:try_get()) end
  if op == "put" then return pack(obj:try_put(c.value)) end
  if op == "recv" then
    if obj:closed() then return pack(nil, "closed") end
    return pack(obj:recv())
  end
  if op == "join" then return pack(obj:join()) end
  return pack(true) -- "readable", "after"
end

local OPS = { get = "channel", put = "channel", recv = "connection", readable = "connection", join = "task" }

local function bad(i, why)
  error(format("bad argument #1 to 'select' (case %d: %s)", i, why), 3)
end

-- Checks the cases: a list of { obj, op [, value] } or { "after", s }.
local function parse(cases, now)
  if type(cases) ~= "table" then error("bad argument #1 to 'select' (table of cases expected)", 3) end
  local list = {}
  for i, raw in ipairs(cases) do
    if type(raw) ~= "table" then bad(i, "a table { object, operation } expected") end
    local c
    if raw[1] == "after" then
      local s = raw[2]
      if type(s) ~= "number" or s ~= s or s < 0 then bad(i, "'after' needs a non-negative number of seconds") end
      c = { op = "after", deadline = now + s }
    else
      local obj, op = raw[1], raw[2]
      local kind = OPS[op]
      if kind == nil then bad(i, "operation must be get, put, recv, readable, join or after") end
      local needs = kind == "channel" and "try_get" or kind == "connection" and "readable" or "join"
      local ok, has = pcall(function() return obj[needs] end)
      if not ok or type(has) ~= "function" then bad(i, "'" .. op .. "' needs a " .. kind) end
      c = { op = op, obj = obj, value = raw[3], kind = kind }
    end
    list[i] = c
  end
  return list
end

-- Starts (or restarts, once it fired) a watcher for each connection and
-- task case; channels are told about sel instead.
local function arm(sel, list)
  for _, c in ipairs(list) do
    if c.kind == "channel" then
      if not c.watching then c.obj:_watch(sel, true); c.watching = true end
    elseif c.kind and (c.watcher == nil or ENDED[c.watcher:status()]) then
      local obj, kind = c.obj, c.kind
      c.watcher = core.spawn(function()
        local ok, err = pcall(function()
          if kind == "connection" then obj:readable() else obj:join() end
        end)
        if not ok then sel.err = sel.err or err end
        sel:fire()
      end)
    end
  end
end

-- Idempotent; runs on every way out (return, error, a cancelled task).
local function disarm(sel, list)
  for _, c in ipairs(list) do
    if c.watching then c.obj:_watch(sel, false); c.watching = false end
    if c.watcher then c.watcher:cancel(); c.watcher = nil end
  end
end

-- comm.select(cases, [timeout]) -> i, ... (the index of the case done,
-- then its results) | nil, "timeout". Blocks until a case is ready.
function M.select(cases, timeout)
  local now = core.now()
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error("bad argument #2 to 'select' (timeout must be a non-negative number)", 2)
  end
  local list = parse(cases, now)
  core.turn() -- a select that never waits still lets the others run (fair scheduling)
  local deadline = timeout and now + timeout
  for _, c in ipairs(list) do
    if c.deadline and (deadline == nil or c.deadline < deadline) then deadline = c.deadline end
  end
  local sel = setmetatable({ cond = core.cond(), fired = false }, Sel)
  local _ <close> = setmetatable({}, { __close = function() disarm(sel, list) end })
  while true do
    now = core.now()
    for i, c in ipairs(list) do
      if ready(c, now) then
        disarm(sel, list)
        local r = perform(c)
        return i, unpack(r, 1, r.n)
      end
    end
    if sel.err then error(sel.err, 2) end
    if deadline and now >= deadline then return nil, "timeout" end
    arm(sel, list)
    if not sel.fired then sel.cond:wait(deadline and deadline - now) end
    sel.fired = false
  end
end

return M
