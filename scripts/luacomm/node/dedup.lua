-- luacomm.node.dedup: the receiver's memory of recent request ids, per
-- sender, so that a retried request runs its handler at most once and gets
-- the first reply again.
--
-- A request is known by (sender, sender's incarnation, id): ids restart
-- when a node restarts, so a new incarnation of a sender starts with a
-- clean slate. Each sender keeps at most `max` ids, each for at least
-- `ttl` seconds unless pushed out by the cap; ids are expired oldest first
-- from a FIFO as new ones arrive, so every operation is O(1) amortised and
-- there is no periodic sweep. Senders themselves are forgotten once
-- silent for `ttl` (swept when their number has doubled since the last
-- sweep), and at most `senders` are kept: past that, those silent
-- longest go.
local setmetatable, pairs = setmetatable, pairs

local M = {}
M._VERSION = "0.1.0"

local Cache = {}
Cache.__index = Cache

-- opts: ttl (s, default 60), max (ids per sender, default 10000),
-- senders (default 1024), now (a clock function, default luacomm's).
function M.new(opts)
  opts = opts or {}
  local now = opts.now
  if now == nil then now = require("luacomm").now end
  return setmetatable({ ttl = opts.ttl or 60, max = opts.max or 10000, max_senders = opts.senders or 1024,
                        now = now, senders = {}, nsenders = 0, sweep_at = 64 }, Cache)
end

-- Makes room for one more sender: forgets the silent ones, and when
-- that is not enough the quarter silent longest (sorted once per quarter
-- of the cap, so O(log n) a sender amortised).
function Cache:_room(now)
  if self.nsenders < self.sweep_at and self.nsenders < self.max_senders then return end
  local limit, live = now - self.ttl, {}
  for name, s in pairs(self.senders) do
    if s.last < limit then self.senders[name] = nil
    else live[#live + 1] = name end
  end
  local n = #live
  if n >= self.max_senders then
    local senders = self.senders
    table.sort(live, function(x, y) return senders[x].last < senders[y].last end)
    local drop = n - (self.max_senders * 3 // 4)
    for i = 1, drop do senders[live[i]] = nil end
    n = n - drop
  end
  self.nsenders = n
  self.sweep_at = n * 2 > 64 and n * 2 or 64
end

-- map: id -> true while its handler runs, then the reply.
local function sender_table(inc)
  return { inc = inc, map = {}, ids = {}, times = {}, head = 1, tail = 0 }
end

-- Drops the oldest ids while over the cap or past their time.
local function expire(s, max, limit)
  local ids, times, map = s.ids, s.times, s.map
  local h, t = s.head, s.tail
  while h <= t and (t - h + 1 >= max or times[h] < limit) do
    map[ids[h]] = nil
    ids[h], times[h] = nil, nil
    h = h + 1
  end
  s.head = h
end

-- Registers a request: "new" for an id not seen (run the handler, then
-- finish() it); "running" while its first run is in progress; "done",
-- reply once finished.
function Cache:begin(src, inc, id)
  local s = self.senders[src]
  local now = self.now()
  if s == nil or s.inc ~= inc then
    if s == nil then
      self:_room(now)
      self.nsenders = self.nsenders + 1
    end
    s = sender_table(inc)
    self.senders[src] = s
  end
  s.last = now
  local r = s.map[id]
  if r == true then return "running" end
  if r ~= nil then return "done", r end
  expire(s, self.max, now - self.ttl)
  s.map[id] = true
  local t = s.tail + 1
  s.tail = t
  s.ids[t], s.times[t] = id, now
  return "new"
end

-- Records the reply (any value but nil, false and true) of a request
-- begun as "new". A no-op once the id has expired or the sender restarted.
function Cache:finish(src, inc, id, reply)
  local s = self.senders[src]
  if s and s.inc == inc and s.map[id] == true then s.map[id] = reply end
end

-- Forgets a request begun as "new" that will not be finished (its input
-- was bad), so that nothing waits on it.
function Cache:forget(src, inc, id)
  local s = self.senders[src]
  if s and s.inc == inc and s.map[id] == true then s.map[id] = nil end
end

-- How many senders are remembered.
function Cache:senders_count()
  return self.nsenders
end

-- How many ids are remembered for src (all senders when src is nil).
function Cache:size(src)
  local n = 0
  for name, s in pairs(self.senders) do
    if src == nil or name == src then n = n + (s.tail - s.head + 1) end
  end
  return n
end

return M
