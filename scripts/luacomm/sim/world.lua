-- luacomm.sim.world: virtual time and the task scheduler of a simulation.
--
-- One world per sim.run. Tasks are plain coroutines resumed by this
-- scheduler only; the clock is a number that moves only when no task is
-- ready, to the time of the earliest pending event (a timer, a timeout, a
-- frame's delivery). Events at the same time run in the order they were
-- scheduled, ready tasks in the order they became ready, so a run is a
-- pure function of its seed.
--
-- Each task and timer belongs to a process (luacomm.sim.proc), which
-- counts them and ends them all when it crashes.
local rng = require "luacomm.sim.rng"

local create, resume, yield, close = coroutine.create, coroutine.resume, coroutine.yield, coroutine.close
local costatus, corunning, isyieldable = coroutine.status, coroutine.running, coroutine.isyieldable
local pack, unpack, concat, select = table.pack, table.unpack, table.concat, select
local format, traceback, tostring, setmetatable = string.format, debug.traceback, tostring, setmetatable

local M = {}

local World = {}
World.__index = World

-- opts: seed (integer), max_time (virtual seconds a run may last).
function M.new(seed, opts)
  opts = opts or {}
  return setmetatable({
    seed = seed, now = 0, seq = 0,
    heap = {}, hn = 0,                -- events: { time, seq, fn, a, b, dead }
    ready = {}, rh = 1, rt = 0,       -- the ready queue
    current = nil,                    -- the task running now
    random = rng.new(seed),
    ids = setmetatable({}, { __mode = "k" }), nextid = 0,
    lines = {}, nlines = 0,           -- the trace
    ftime = {}, fsrc = {}, fdst = {}, -- the trace's frame lines
    max_time = opts.max_time or 3600,
    spin = 0,                         -- events run since the clock last moved
    ndead = 0,                        -- cancelled events still in the heap
    -- Inside the luacomm host, a run lets the host's loop turn now and
    -- then (its other tasks, signals, the runaway guard's clock).
    breathe = opts.breathe, nevents = 0,
    pool = {}, npool = 0,             -- posted events' tables, for reuse
  }, World)
end

-- A number for an object, in creation order: what deterministic `pairs`
-- sorts table keys by.
function World:id(obj)
  local ids = self.ids
  local i = ids[obj]
  if i == nil then
    i = self.nextid + 1
    self.nextid = i
    ids[obj] = i
  end
  return i
end

-- One trace line: virtual time, then format(fmt, ...). Kept unformatted
-- (formatting every frame's line as it happens was a third of the
-- simulation's time) and rendered by World:render.
function World:trace(fmt, ...)
  local n = self.nlines + 1
  self.nlines = n
  self.lines[n] = { self.now, fmt, ... }
end

-- A frame's line: the first bytes of the frame, printable.
local function frame_text(frame)
  local n = #frame
  if n > 72 then frame = frame:sub(1, 72) .. "..." end
  if frame:find("[%c\128-\255]") then frame = frame:gsub("[%c\128-\255]", "?") end
  return n, frame
end

-- A delivered frame: kept in flat arrays, no table per frame.
function World:trace_frame(src, dst, frame)
  local n = self.nlines + 1
  self.nlines = n
  self.lines[n], self.ftime[n], self.fsrc[n], self.fdst[n] = frame, self.now, src, dst
end

-- The trace as text, one event a line.
function World:render()
  local out, lines = {}, self.lines
  for i = 1, self.nlines do
    local l = lines[i]
    if type(l) == "table" then
      out[i] = format("%.6f ", l[1]) .. format(l[2], unpack(l, 3))
    else
      local canon = self.canon and self.canon(l)
      out[i] = format("%.6f %s>%s %d %s", self.ftime[i], self.fsrc[i], self.fdst[i], #l, select(2, frame_text(canon or l)))
    end
  end
  return concat(out, "\n") .. "\n"
end

---------------------------------------------------------------- events

local function earlier(x, y)
  return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2])
end

-- Puts event e (time t, sequence seq) into the heap, which orders by
-- (time, seq), compared inline: this is the simulation's hottest code.
local function push(self, e, t, seq)
  local heap, i = self.heap, self.hn + 1
  self.hn = i
  while i > 1 do
    local p = i // 2
    local pe = heap[p]
    local pt = pe[1]
    if pt < t or (pt == t and pe[2] < seq) then break end
    heap[i] = pe
    i = p
  end
  heap[i] = e
end

-- Schedules fn(a, b) at virtual time t; returns the event (cancel with
-- World.cancel).
function World:at(t, fn, a, b)
  local seq = self.seq + 1
  self.seq = seq
  local e = { t, seq, fn, a, b, false }
  push(self, e, t, seq)
  return e
end

-- World:post(t, fn, a, b): as World:at, for an event nobody keeps to
-- cancel (a delivery, a yield's wake-up): its table is reused once run.
function World:post(t, fn, a, b)
  local pool, n = self.pool, self.npool
  if n == 0 then
    local e = self:at(t, fn, a, b)
    e[7] = true
    return
  end
  local e = pool[n]
  pool[n] = nil
  self.npool = n - 1
  local seq = self.seq + 1
  self.seq = seq
  e[1], e[2], e[3], e[4], e[5], e[6] = t, seq, fn, a, b, false
  push(self, e, t, seq)
end

-- Cancelled events stay in the heap until their time comes (most are
-- timeouts that never fire); past half the heap they are swept out.
function World:cancel(e)
  if e and not e[6] then
    e[6] = true
    local d = self.ndead + 1
    self.ndead = d
    if d > 256 and d * 2 > self.hn then self:_sweep() end
  end
end

function World:_sweep()
  local heap, live, n = self.heap, {}, 0
  for i = 1, self.hn do
    local e = heap[i]
    if not e[6] then n = n + 1; live[n] = e end
  end
  table.sort(live, earlier)
  self.heap, self.hn, self.ndead = live, n, 0
end

local function pop(self)
  local heap, n = self.heap, self.hn
  if n == 0 then return nil end
  local top, last = heap[1], heap[n]
  heap[n] = nil
  n = n - 1
  self.hn = n
  if n > 0 then
    local lt, ls = last[1], last[2]
    local i = 1
    while true do
      local c = i * 2
      if c > n then break end
      local ce = heap[c]
      if c < n then
        local de = heap[c + 1]
        local dt, ct = de[1], ce[1]
        if dt < ct or (dt == ct and de[2] < ce[2]) then c, ce = c + 1, de end
      end
      local ct = ce[1]
      if lt < ct or (lt == ct and ls < ce[2]) then break end
      heap[i] = ce
      i = c
    end
    heap[i] = last
  end
  if top[6] then self.ndead = self.ndead - 1 end
  return top
end

---------------------------------------------------------------- tasks

local Task = {}
Task.__index = Task
Task.__name = "luacomm.task"
function Task.__tostring(t) return format("luacomm.task: sim %d", t.id) end

-- A yield lets every other ready task run, and the events due by then:
-- it costs a microsecond of virtual time, as a turn of the real loop
-- costs some, so a task polling in a yield loop (for a timer, a frame)
-- sees time move instead of spinning forever at one instant.
local YIELD_QUANTUM = 1e-6

-- Timeouts. A task keeps at most one timeout event in the heap: a wake
-- leaves it there, and a later wait with a later deadline reuses it (it
-- moves itself on when it fires early), so a reader that waits on every
-- frame with a timeout costs no heap work per frame.
local on_timeout

local function arm(self, t, deadline)
  t.deadline = deadline
  local ev = t.tev
  if ev == nil or ev[1] > deadline then
    if ev then self:cancel(ev) end -- superseded: swept with the dead
    ev = self:at(deadline, on_timeout, t)
    ev[5] = ev
    t.tev = ev
  end
end

-- A yield's wake-up: an event of its own, so the task's timeout event
-- stays where it is for its next wait.
local function on_yield(t, gen)
  if t.gen == gen and t.state == "waiting" then t.world:wake(t, false) end
end

local function park_yield(self, t)
  t.state = "waiting"
  local gen = t.gen + 1
  t.gen = gen
  self:post(self.now + YIELD_QUANTUM, on_yield, t, gen)
end

on_timeout = function(t, ev)
  if t.tev == ev then t.tev = nil end
  local d = t.deadline
  if d == nil or t.state ~= "waiting" then return end
  local w = t.world
  if d <= w.now then
    t.deadline = nil
    w:wake(t, false)
  elseif t.tev == nil then
    arm(w, t, d)
  end
end

local function push_ready(self, t)
  local n = self.rt + 1
  self.rt = n
  self.ready[n] = t
end

-- The message handler of every task: the traceback is kept for the log,
-- join gets the error itself.
local last_tb
local function handler(e)
  last_tb = traceback(tostring(e), 2)
  return e
end

-- Starts fn(...) in a new task of proc; it runs once the caller waits or
-- yields. Returns the task.
function World:spawn(proc, fn, ...)
  if type(fn) ~= "function" then error("bad argument #1 to 'spawn' (function expected)", 3) end
  local t = setmetatable({ world = self, proc = proc, state = "ready", gen = 0, args = pack(...) }, Task)
  t.id = self:id(t)
  t.co = create(function(...)
    local r = pack(xpcall(fn, handler, ...))
    if not r[1] then r.tb = last_tb end
    return r
  end)
  proc:add_task(t)
  push_ready(self, t)
  return t
end

local function wake_joiners(t)
  local j = t.joiners
  if j then
    t.joiners = nil
    for i = 1, #j, 2 do
      local w = j[i]
      if w.gen == j[i + 1] then t.world:wake(w, true) end
    end
  end
end

local function finish(t, r)
  t.results = r
  if r[1] then
    t.state = "done"
  else
    t.state = "failed"
    t.proc:task_failed(t, r.tb or tostring(r[2]))
  end
  t.proc:remove_task(t)
  wake_joiners(t)
end

function World:resume_task(t)
  local co = t.co
  self.current = t
  t.state = "running"
  local ok, r
  local args = t.args
  if args then
    t.args = nil
    ok, r = resume(co, unpack(args, 1, args.n))
  else
    local v = t.wake
    t.wake = nil
    ok, r = resume(co, v)
  end
  self.current = nil
  if costatus(co) == "dead" then
    if t.state == "cancelled" then return end
    if not ok then r = { n = 2, false, tostring(r), tb = tostring(r) } end
    finish(t, r)
  elseif t.state == "cancelled" then
    close(co) -- it cancelled itself: runs its pending <close> variables
  elseif t.state == "running" then
    park_yield(self, t) -- a plain coroutine.yield: as comm.yield
  end
end

-- Raises unless called from a task's own coroutine, where blocking works.
function World:current_task(level)
  local t = self.current
  if t == nil then error("luacomm: blocking call outside a task (use comm.spawn or comm.run)", level + 1) end
  if corunning() ~= t.co then error("luacomm: blocking call from a nested coroutine", level + 1) end
  if not isyieldable() then
    error("luacomm: cannot block across a C-call boundary (a metamethod or C function called from Lua)", level + 1)
  end
  return t
end

-- Parks the current task until wake (-> its value) or timeout seconds
-- (-> false). A task waits for one thing at a time: t.gen tells a waker
-- whether the task still waits for what it registered for.
function World:block(timeout, level, t)
  t = t or self:current_task((level or 1) + 1)
  t.state = "waiting"
  t.gen = t.gen + 1
  if timeout then
    if timeout < 0 then timeout = 0 end
    arm(self, t, self.now + timeout)
  end
  return yield()
end

-- Makes a waiting task ready; resume hands it v. false if it was not waiting.
function World:wake(t, v)
  if t.state ~= "waiting" then return false end
  t.deadline = nil
  t.state = "ready"
  t.wake = v
  push_ready(self, t)
  return true
end

function World:yield()
  park_yield(self, self:current_task(2))
  yield()
end

function World:sleep(s)
  if type(s) ~= "number" then error("bad argument #1 to 'sleep' (number expected)", 2) end
  self:block(s, 2)
end

function Task:join(timeout)
  local w = self.world
  if w.current == self then error("luacomm: a task cannot join itself", 2) end
  if self.results == nil then
    if timeout and timeout <= 0 then return false, "timeout" end
    local cur = w:current_task(2)
    local j = self.joiners or {}
    self.joiners = j
    j[#j + 1] = cur
    j[#j + 1] = cur.gen + 1 -- the gen block() is about to give it
    if not w:block(timeout, nil, cur) then return false, "timeout" end
  end
  local r = self.results
  if r[1] then return true, unpack(r, 2, r.n) end
  return false, r[2]
end

function Task:cancel()
  local st = self.state
  if st == "done" or st == "failed" or st == "cancelled" then return end
  local w = self.world
  self.state = "cancelled"
  self.deadline = nil
  self.results = { n = 2, false, "cancelled" }
  self.proc:remove_task(self)
  wake_joiners(self)
  if w.current == self then
    yield() -- never resumed: the scheduler closes the coroutine
  elseif costatus(self.co) == "suspended" then
    close(self.co)
  end
end

function Task:status() return self.state end

---------------------------------------------------------------- wait queues

-- A FIFO of waiting tasks, each with the gen it waits under.
local Queue = {}
Queue.__index = Queue

function M.queue() return setmetatable({ h = 1, t = 0 }, Queue) end

-- Waits on the queue: true when woken, false on timeout.
function Queue:wait(w, timeout, level)
  local cur = w:current_task((level or 1) + 1)
  local n = self.t + 1
  self.t = n
  self[2 * n - 1], self[2 * n] = cur, cur.gen + 1 -- the gen block() is about to give it
  return w:block(timeout, nil, cur)
end

-- Wakes the first task still waiting on this queue, with v (default
-- true); true if there was one.
function Queue:wake_one(w, v)
  local h = self.h
  while h <= self.t do
    local t, g = self[2 * h - 1], self[2 * h]
    self[2 * h - 1], self[2 * h] = nil, nil
    h = h + 1
    self.h = h
    if t.gen == g and t.state == "waiting" then
      w:wake(t, v == nil and true or v)
      return true
    end
  end
  self.h, self.t = 1, 0
  return false
end

function Queue:wake_all(w, v)
  while self:wake_one(w, v) do end
end

---------------------------------------------------------------- conds

local Cond = {}
Cond.__index = Cond
Cond.__name = "luacomm.cond"

function World:cond()
  return setmetatable({ world = self, q = M.queue() }, Cond)
end

-- cond:wait([timeout]) -> true | nil, "timeout"
function Cond:wait(timeout)
  if self.q:wait(self.world, timeout, 2) then return true end
  return nil, "timeout"
end

function Cond:signal() return self.q:wake_one(self.world) end
function Cond:broadcast() self.q:wake_all(self.world) end

---------------------------------------------------------------- timers

local Timer = {}
Timer.__index = Timer
Timer.__name = "luacomm.timer"

local function fire(timer)
  if not timer.on then return end
  local w = timer.world
  if timer.period then
    timer.due = timer.due + timer.period
    timer.ev = w:at(timer.due, fire, timer)
  else
    timer.on = false
    timer.proc:timer_done(timer)
  end
  local args = timer.args
  timer.task = w:spawn(timer.proc, timer.fn, unpack(args, 1, args.n))
end

-- A one-shot (period nil) or repeating timer of proc.
function World:timer(proc, s, period, fn, ...)
  if type(s) ~= "number" or s ~= s or s < 0 then error("bad argument #1 (non-negative number expected)", 3) end
  if type(fn) ~= "function" then error("bad argument #2 (function expected)", 3) end
  if period and period <= 0 then error("bad argument #1 to 'every' (positive number expected)", 3) end
  local t = setmetatable({ world = self, proc = proc, fn = fn, args = pack(...), period = period,
                           due = self.now + s, on = true }, Timer)
  self:id(t)
  t.ev = self:at(t.due, fire, t)
  proc:timer_started(t)
  return t
end

function Timer:cancel()
  local task = self.task
  if task and task.args then task:cancel() end -- fired, but its callback has not started
  if not self.on then return end
  self.on = false
  self.world:cancel(self.ev)
  self.proc:timer_done(self)
end

function Timer:active() return self.on end

---------------------------------------------------------------- the loop

-- A run with more events pending than this has a runaway (messages
-- that beget messages): it fails rather than eat the memory.
local MAX_PENDING = 1000000

-- Runs until done() is true after the ready tasks ran: true; false when
-- nothing is left to happen. Raises past max_time, or when events keep
-- running without the clock ever moving (a livelock).
function World:loop(done)
  local ready = self.ready
  while true do
    while self.rh <= self.rt do
      local h = self.rh
      local t = ready[h]
      ready[h] = nil
      self.rh = h + 1
      if t.state == "ready" then self:resume_task(t) end
    end
    self.rh, self.rt = 1, 0
    if done() then return true end
    local e
    repeat e = pop(self) until e == nil or not e[6]
    if e == nil then return false end
    if e[1] > self.now then
      self.now = e[1]
      self.spin = 0
      if self.now > self.max_time then
        error(format("virtual time passed max_time (%g s)", self.max_time), 0)
      end
    else
      self.spin = self.spin + 1
      if self.spin > 2000000 then error("livelock: 2000000 events without the clock moving", 0) end
    end
    e[3](e[4], e[5])
    if self.hn > MAX_PENDING then
      error(format("event storm: %d events pending at %.6f s (frames multiplying without end?)", self.hn, self.now), 0)
    end
    if e[7] then -- a posted event: back to the pool
      e[3], e[4], e[5] = nil, nil, nil
      local n = self.npool + 1
      self.npool = n
      self.pool[n] = e
    end
    local b = self.breathe
    if b then
      self.nevents = self.nevents + 1
      if self.nevents % 256 == 0 then b() end
    end
  end
end

M.Task, M.Timer, M.Cond = Task, Timer, Cond
return M
