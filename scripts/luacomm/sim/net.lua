-- luacomm.sim.net: the simulated network — listeners, framed connections,
-- and the faults the spec asks for.
--
-- A connection is two endpoints. A frame sent on one is delivered to the
-- other after a delay drawn from [lat_min, lat_max]; frames of one
-- direction keep their order (as TCP does) unless `reorder` picks them,
-- and `loss` / `duplicate` drop or repeat whole frames, so the node
-- library is tested against message-level faults a single TCP stream
-- never shows but a cluster of reconnecting links does. A cut between two
-- processes drops everything that would cross it, one way or both; a
-- connect across it times out. Closing sends an end-of-stream behind the
-- frames already sent; a frame that reaches an endpoint closed meanwhile
-- is answered with a reset, so its sender sees "closed".
local queue = require("luacomm.sim.world").queue

local format, type, setmetatable, error = string.format, type, setmetatable, error
local math_max = math.max

local M = {}

local DEFAULT_MAX_FRAME = 16 * 1024 * 1024
local EOF = {} -- the end-of-stream marker in a delivery

local Net = {}
Net.__index = Net

function M.new(world, opts)
  opts = opts or {}
  local lat = opts.latency or { 0.001, 0.005 }
  return setmetatable({
    world = world,
    listeners = {},     -- "host:port" -> listener
    cuts = {},          -- from proc name -> { [to name] = true }
    lat_min = lat[1] or lat.min, lat_max = lat[2] or lat.max,
    loss = opts.loss or 0, dup = opts.duplicate or 0, reorder = opts.reorder or 0,
    next_port = 40000,
    trace_frames = opts.trace ~= "events",
    delivered = 0,      -- frames delivered, for the bench
  }, Net)
end

---------------------------------------------------------------- faults

function Net:is_cut(from, to)
  if not self.anycut then return false end
  local c = self.cuts[from]
  return c ~= nil and c[to] == true
end

function Net:cut(from, to)
  self.anycut = true
  local c = self.cuts[from]
  if c == nil then
    c = {}
    self.cuts[from] = c
  end
  c[to] = true
end

function Net:heal() self.cuts, self.anycut = {}, false end

function Net:delay()
  local lo, hi = self.lat_min, self.lat_max
  if hi <= lo then return lo end
  return lo + (hi - lo) * self.world.random()
end

---------------------------------------------------------------- addresses

-- "host:port" or "[v6]:port" -> host, port; raises on anything else, as
-- the real module raises on a malformed address.
function M.parse(addr, level)
  if type(addr) ~= "string" then error("bad argument #1 (address string expected)", level + 1) end
  if addr:match("^unix:") then error("not simulated: unix sockets (" .. addr .. ")", level + 1) end
  local host, port = addr:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = addr:match("^([^:]+):(%d+)$") end
  port = math.tointeger(tonumber(port))
  if not host or port > 65535 then error("malformed address '" .. addr .. "' (expected host:port)", level + 1) end
  return host, port
end

local function join(host, port)
  if host:find(":", 1, true) then return format("[%s]:%d", host, port) end
  return format("%s:%d", host, port)
end
M.join = join

---------------------------------------------------------------- connections

local Conn = {}
Conn.__index = Conn
Conn.__name = "luacomm.conn"
function Conn.__tostring(c)
  if c.shut then return "luacomm.conn (closed)" end
  return format("luacomm.conn: %s -> %s", join(c.lhost, c.lport), join(c.rhost, c.rport))
end
function Conn:__close() self:close() end

local function new_conn(net, proc, lhost, lport, rhost, rport, max_frame)
  local c = setmetatable({ net = net, proc = proc, lhost = lhost, lport = lport, rhost = rhost, rport = rport,
                           max_frame = max_frame or DEFAULT_MAX_FRAME, q = {}, qh = 1, qt = 0,
                           readers = queue(), last_at = 0,
                           st = { frames_in = 0, frames_out = 0, bytes_in = 0, bytes_out = 0 } }, Conn)
  net.world:id(c)
  proc:add_conn(c)
  return c
end

local deliver

-- Puts item (a frame, or EOF) on the wire from endpoint c to its peer.
local function transmit(net, c, item, kind)
  local peer = c.other
  local src, dst = c.proc.name, peer.proc.name
  local w = net.world
  if net.anycut and net:is_cut(src, dst) then
    if net.trace_frames then w:trace("drop cut %s>%s %s", src, dst, kind) end
    return
  end
  local data = item ~= EOF
  if data and net.loss > 0 and w.random() < net.loss then
    if net.trace_frames then w:trace("drop loss %s>%s %d", src, dst, #item) end
    return
  end
  local lo, hi = net.lat_min, net.lat_max
  local at = w.now + (hi > lo and lo + (hi - lo) * w.random() or lo)
  if not (data and net.reorder > 0 and w.random() < net.reorder) then
    at = math_max(at, c.last_at)
    c.last_at = at
  end
  w:post(at, deliver, peer, item)
  if data and net.dup > 0 and w.random() < net.dup then
    if net.trace_frames then w:trace("dup %s>%s %d", src, dst, #item) end
    w:post(at + net:delay(), deliver, peer, item)
  end
end

deliver = function(c, item)
  local net, peer = c.net, c.other
  local w = net.world
  if c.gone then return end -- its process died without a trace (a silent crash)
  if net.anycut and net:is_cut(peer.proc.name, c.proc.name) then
    if net.trace_frames then w:trace("drop cut %s>%s %s", peer.proc.name, c.proc.name, item == EOF and "eof" or #item) end
    return
  end
  if item == EOF then
    if c.eof then return end
    c.eof = true
    c.readers:wake_all(w)
    return
  end
  if c.shut then
    -- a frame for an endpoint that closed: the peer's stack answers with a reset
    if not peer.shut and not peer.eof then transmit(net, c, EOF, "rst") end
    return
  end
  if c.eof then return end -- already reset: nothing after it arrives
  net.delivered = net.delivered + 1
  if net.trace_frames then w:trace_frame(peer.proc.name, c.proc.name, item) end
  if #item > c.max_frame then
    c.too_large = true
    c.proc:log("warn", format("connection closed: frame announced over max_frame (%d)", c.max_frame))
    c:_shut()
    c.readers:wake_all(w)
    return
  end
  local st, pc = c.st, c.proc.counters
  st.frames_in, st.bytes_in = st.frames_in + 1, st.bytes_in + #item + 4
  pc.frames_in, pc.bytes_in = pc.frames_in + 1, pc.bytes_in + #item + 4
  local n = c.qt + 1
  c.qt = n
  c.q[n] = item
  c.readers:wake_one(w)
end

local function check_open(c, level)
  if c.shut and c.user_closed then error("attempt to use a closed connection", level + 1) end
end

-- conn:send(frame) -> true | nil, err. Never blocks: the simulated wire
-- has no buffer limit.
function Conn:send(frame)
  check_open(self, 2)
  if type(frame) ~= "string" then error("bad argument #1 to 'send' (string expected, got " .. type(frame) .. ")", 2) end
  if self.shut or self.eof then return nil, "closed" end
  if #frame > self.max_frame then return nil, "frame too large" end
  local st, pc = self.st, self.proc.counters
  st.frames_out, st.bytes_out = st.frames_out + 1, st.bytes_out + #frame + 4
  pc.frames_out, pc.bytes_out = pc.frames_out + 1, pc.bytes_out + #frame + 4
  transmit(self.net, self, frame, "frame")
  return true
end

-- conn:recv([timeout]) -> frame | nil, "timeout" | "closed" | "frame too large"
function Conn:recv(timeout)
  check_open(self, 2)
  if timeout ~= nil and type(timeout) ~= "number" then error("bad argument #1 to 'recv' (number expected)", 2) end
  local w = self.net.world
  if self.reading then error("luacomm: another task is already reading this connection", 2) end
  while true do
    local h = self.qh
    if h <= self.qt then
      local f = self.q[h]
      self.q[h] = nil
      self.qh = h + 1
      return f
    end
    if self.too_large then
      self.too_large = false
      return nil, "frame too large"
    end
    if self.shut or self.eof then return nil, "closed" end
    self.reading = true
    local woke = self.readers:wait(w, timeout, 2)
    self.reading = false
    if not woke then return nil, "timeout" end
  end
end

-- Ends this endpoint without a user close (a frame too large, a crash).
function Conn:_shut(silent)
  if self.shut then return end
  self.shut = true
  self.proc:remove_conn(self)
  if silent then
    self.gone = true
  elseif not self.other.gone then
    transmit(self.net, self, EOF, "eof")
  end
  self.readers:wake_all(self.net.world)
end

-- Idempotent; what was sent before arrives before the end of the stream.
function Conn:close()
  if self.user_closed then return end
  self.user_closed = true
  self:_shut()
end

function Conn:closed() return self.shut == true end
-- Once closed: nil, "closed" (closed by the peer or the core), or an
-- error (closed by the caller), as the real connections do.
function Conn:peer()
  check_open(self, 2)
  if self.shut then return nil, "closed" end
  return self.rhost, self.rport
end
function Conn:addr()
  check_open(self, 2)
  if self.shut then return nil, "closed" end
  return self.lhost, self.lport
end
function Conn:stats()
  local s = self.st
  return { frames_in = s.frames_in, frames_out = s.frames_out, bytes_in = s.bytes_in, bytes_out = s.bytes_out }
end
function Conn.tls() return nil end
for _, name in ipairs{ "write", "read", "readline" } do
  Conn[name] = function() error("not simulated: conn:" .. name .. " (raw stream I/O)", 2) end
end

---------------------------------------------------------------- listeners

local Listener = {}
Listener.__index = Listener
Listener.__name = "luacomm.listener"
function Listener.__tostring(l) return "luacomm.listener: " .. l.addr_s end
function Listener:__close() self:close() end

local function check_opts(opts, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error("bad argument #2 (options table expected)", level + 1) end
  if opts.tls ~= nil then error("not simulated: tls", level + 1) end
  for _, k in ipairs{ "max_frame", "backlog", "hwm", "max_conns" } do
    local v = opts[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < (k == "max_frame" and 0 or 1)) then
      error(("bad option %s (%s integer expected)"):format(k, k == "max_frame" and "non-negative" or "positive"), level + 1)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout < 0) then
    error("bad option timeout (non-negative number expected)", level + 1)
  end
  return opts
end

-- net:listen(proc, addr, opts) -> listener | nil, "address in use"
function Net:listen(proc, addr, opts)
  local host, port = M.parse(addr, 3)
  opts = check_opts(opts, 3)
  if port == 0 then
    repeat
      self.next_port = self.next_port + 1
      port = self.next_port
    until self.listeners[join(host, port)] == nil
  end
  local key = join(host, port)
  if self.listeners[key] then return nil, "address in use" end
  local l = setmetatable({ net = self, proc = proc, host = host, port = port, addr_s = key,
                           max_frame = opts.max_frame, max_conns = opts.max_conns,
                           backlog = {}, bh = 1, bt = 0, accepters = queue() }, Listener)
  self.world:id(l)
  self.listeners[key] = l
  proc:add_listener(l)
  return l
end

function Listener:accept(timeout)
  if self.shut then
    if self.user_closed then error("attempt to use a closed listener", 2) end
    return nil, "closed"
  end
  local w = self.net.world
  while true do
    local h = self.bh
    if h <= self.bt then
      local c = self.backlog[h]
      self.backlog[h] = nil
      self.bh = h + 1
      if not c.shut then return c end
    elseif self.shut then
      return nil, "closed"
    elseif not self.accepters:wait(w, timeout, 2) then
      return nil, "timeout"
    end
  end
end

function Listener:addr() return self.host, self.port end

function Listener:_shut()
  if self.shut then return end
  self.shut = true
  local net = self.net
  if net.listeners[self.addr_s] == self then net.listeners[self.addr_s] = nil end
  self.proc:remove_listener(self)
  for i = self.bh, self.bt do self.backlog[i]:_shut() end
  self.bh, self.bt = 1, 0
  self.accepters:wake_all(net.world)
end

function Listener:close()
  self.user_closed = true
  self:_shut()
end

---------------------------------------------------------------- connect

-- net:connect(proc, addr, opts) -> conn | nil, err. Blocks the calling
-- task for a round trip (up to opts.timeout, default 10, across a cut).
function Net:connect(proc, addr, opts)
  local host, port = M.parse(addr, 3)
  opts = check_opts(opts, 3)
  local w = self.world
  local timeout = opts.timeout or 10
  local deadline = w.now + timeout
  -- Across a cut the SYN is lost and retransmitted after 1, 2, 4 ... s,
  -- as TCP does: a cut that heals meanwhile lets the connect through.
  local retry = 1
  while true do
    local l = self.listeners[join(host, port)]
    local there = l and l.proc.name
    if not (there and (self:is_cut(proc.name, there) or self:is_cut(there, proc.name))) then break end
    local left = deadline - w.now
    if left <= 0 then
      w:trace("connect %s>%s timeout", proc.name, addr)
      return nil, "timeout"
    end
    w:block(math.min(retry, left), 3)
    retry = retry * 2
  end
  timeout = deadline - w.now
  local out = self:delay()
  if out > timeout then
    w:block(timeout, 3)
    return nil, "timeout"
  end
  w:block(out, 3)
  local l = self.listeners[join(host, port)]
  if l == nil or l.shut then
    w:block(self:delay(), 3)
    w:trace("connect %s>%s refused", proc.name, addr)
    return nil, "connection refused"
  end
  self.next_port = self.next_port + 1
  local cport = self.next_port
  local mine = new_conn(self, proc, proc.name, cport, l.host, l.port, opts.max_frame)
  local theirs = new_conn(self, l.proc, l.host, l.port, proc.name, cport, l.max_frame)
  mine.other, theirs.other = theirs, mine
  w:trace("connect %s>%s ok", proc.name, addr)
  if l.max_conns and l.proc:count_conns() > l.max_conns then
    theirs:_shut() -- accepted and closed at once
  else
    local n = l.bt + 1
    l.bt = n
    l.backlog[n] = theirs
    l.accepters:wake_one(w)
  end
  w:block(self:delay(), 3)
  return mine
end

M.Conn, M.Listener = Conn, Listener
return M
