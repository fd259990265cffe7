-- luacomm.node: the standard node behaviour of CONTRACT §6 — links with a
-- versioned handshake, heartbeats and failure detection, send / broadcast /
-- request with retries and receiver-side dedup, and link-state routing.
-- docs/PROTOCOL.md describes the wire protocol this file speaks.
--
-- Shape: one task reads each link and dispatches its frames; every user
-- handler (n:on) runs in a task of its own (a pooled worker: one handler
-- at a time each) and every on_peer callback too, so they may block
-- without holding up the link. A configured peer address has one dialler
-- task that keeps it dialled. Per message the work is O(1): table lookups
-- for the link, the route (recomputed only when the topology changes), the
-- pending request and the dedup entry.
--
-- The seam. Everything the node does to the outside world goes through two
-- small tables given to node.new (both default to luacomm's own), so that a
-- simulator can run many nodes in one process over a fake network with
-- virtual time and seeded faults, with this same code:
--
--   transport.listen(addr, opts) -> listener | nil, err
--     opts.max_frame; listener:accept() -> conn | nil, err (nil once
--     closed); listener:addr() -> host, port; listener:close()
--   transport.connect(addr, opts) -> conn | nil, err
--     opts.timeout, opts.max_frame
--   conn:send(frame) -> true | nil, err; conn:recv(timeout) -> frame |
--     nil, "timeout" (conn still usable) | nil, other err (conn unusable);
--     conn:close() (idempotent); conn:closed() -> bool; conn:peer() -> host, port
--
--   clock.now() -> monotonic seconds; clock.time() -> wall-clock seconds
--     (only to stamp this incarnation); clock.sleep(s); clock.yield();
--     clock.spawn(fn, ...) -> task (task:cancel()); clock.running() -> the
--     current task;
--     clock.cond() -> cond (cond:wait([timeout]) -> true | nil, "timeout";
--     cond:signal(); cond:broadcast()); clock.random() -> [0, 1) (jitter)
local comm = require "luacomm"
local core = require "luacomm.core"
local backoff = require "luacomm.node.backoff"
local routes = require "luacomm.node.routes"
local dedup = require "luacomm.node.dedup"
local envelope = require "luacomm.node.envelope"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local setmetatable, xpcall, pcall = setmetatable, xpcall, pcall
local floor, format, traceback = math.floor, string.format, debug.traceback
local encode, decode = envelope.encode, envelope.decode
local null = comm.json.null

local M = {}
M._VERSION = "0.1.0"
M.PROTOCOL = envelope.VERSION

M.transport = { listen = comm.listen, connect = comm.connect }
M.clock = { now = comm.now, time = comm.time, sleep = comm.sleep, yield = comm.yield,
            spawn = comm.spawn, running = comm.running, cond = core.cond, random = math.random }

-- Counters reported by n:stats(), all starting at 0.
local COUNTERS = {
  "sent", "received", "broadcasts", "requests", "served", "replies", "retries", "timeouts",
  "late_replies", "dup_requests", "relayed", "expired", "hop_limit", "unroutable",
  "no_handler", "handler_errors", "links_up", "links_down", "rejected",
  -- bad input from peers; bad_input is their sum
  "bad_input", "bad_json", "bad_envelope", "unknown_kind", "frame_too_large",
  "bad_handshake", "handshake_timeout",
}

-- Errors worth another try: the next one may find a route or a reply.
local RETRYABLE = { timeout = true, unreachable = true }

local Node = {}
Node.__index = Node

local Link = {}
Link.__index = Link

---------------------------------------------------------------- options

local function positive(opts, k, def)
  local v = opts[k]
  if v == nil then return def end
  if type(v) ~= "number" or v ~= v or v <= 0 then error(format("node.new: %s must be a positive number", k), 3) end
  return v
end

local function bounds(t, what, def_min, def_max)
  t = t or {}
  if type(t) ~= "table" then error("node.new: " .. what .. " must be a table { min =, max = }", 3) end
  local lo, hi = t.min or def_min, t.max or def_max
  if type(lo) ~= "number" or lo <= 0 or type(hi) ~= "number" or hi < lo then
    error("node.new: " .. what .. " needs 0 < min <= max", 3)
  end
  return { min = lo, max = hi }
end

local function check_peers(peers)
  if peers == nil then return {} end
  if type(peers) ~= "table" then error("node.new: peers must be a list of addresses", 3) end
  local list = {}
  for i, a in ipairs(peers) do
    if type(a) ~= "string" then error("node.new: peers[" .. i .. "] must be an address string", 3) end
    list[i] = a
  end
  return list
end

-- node.new(opts): see CONTRACT §6. Extra options: handshake_timeout
-- (default: timeout), request_timeout (5), retry = { min, max } (backoff
-- between request tries), max_hops (16), max_frame, dedup = { ttl, max },
-- log (a comm.log-like table), transport, clock (the seam above).
function M.new(opts)
  if type(opts) ~= "table" then error("node.new: options table expected", 2) end
  if type(opts.name) ~= "string" or opts.name == "" then error("node.new: name must be a non-empty string", 2) end
  if opts.listen ~= nil and type(opts.listen) ~= "string" then
    error("node.new: listen must be an address string", 2)
  end
  local clock = opts.clock or M.clock
  local self = setmetatable({
    name = opts.name,
    listen = opts.listen,
    peer_addrs = check_peers(opts.peers),
    heartbeat = positive(opts, "heartbeat", 0.5),
    timeout = positive(opts, "timeout", 2.0),
    reconnect = bounds(opts.reconnect, "reconnect", 0.05, 5),
    retry = bounds(opts.retry, "retry", 0.05, 1),
    request_timeout = positive(opts, "request_timeout", 5),
    max_hops = positive(opts, "max_hops", 16),
    max_frame = opts.max_frame,
    _transport = opts.transport or M.transport,
    _clock = clock,
    _log = opts.log or comm.log,
    _handlers = {},        -- type -> fn, looked up per message (reload-safe)
    _peer_fns = {},
    _peers = {},           -- name -> { name, state, addr, rtt, last_seen, inc, changed, grace }
    _up = {},              -- name -> the one current link to that node
    _addr_peer = {},       -- dialled address -> the name it answered with
    _pending = {},         -- request id -> { to, cond, done, body, err }
    _npending = 0,
    _handshaking = {},     -- conns between accept/connect and the end of the handshake
    _idle = {},            -- parked worker tasks (see _work)
    _live = {},            -- every link being read: current and retired
    _dialers = {},         -- address -> its dialler task
    _connecting = {},      -- address -> true while its dialler is in connect
    _next_id = 0,
    _serial = 0,
    _seq = 0,
    _stats = {},
    _warn_t = -1, _warn_n = 0,
  }, Node)
  self.handshake_timeout = positive(opts, "handshake_timeout", self.timeout)
  local d = opts.dedup or {}
  self._dedup = dedup.new{ ttl = d.ttl, max = d.max, now = clock.now }
  self._routes = routes.new(self.name)
  for _, k in ipairs(COUNTERS) do self._stats[k] = 0 end
  return self
end

---------------------------------------------------------------- small helpers

local function count(self, k, n)
  local s = self._stats
  s[k] = s[k] + (n or 1)
end

local function addr_string(host, port)
  if not host then return nil end
  if host:find(":", 1, true) then return format("[%s]:%d", host, port) end
  return format("%s:%d", host, port)
end

local function peer_of(conn)
  if conn:closed() then return "?" end
  local ok, host, port = pcall(conn.peer, conn)
  return ok and addr_string(host, port) or "?"
end

-- A graceful stop closes every connection: a node must not dial them again
-- meanwhile, or the stop waits for its deadline.
local function host_stopping()
  return comm.stopping()
end

-- Bad input is counted every time, logged at most 10 times a second.
function Node:_bad(why, from, detail)
  count(self, why)
  count(self, "bad_input")
  local now = self._clock.now()
  if now - self._warn_t >= 1 then
    if self._warn_n > 10 then
      self._log.warn("node %s: %d more bad input(s) not logged", self.name, self._warn_n - 10)
    end
    self._warn_t, self._warn_n = now, 0
  end
  self._warn_n = self._warn_n + 1
  if self._warn_n <= 10 then
    self._log.warn("node %s: bad input from %s: %s%s", self.name, from, why, detail and (" (" .. detail .. ")") or "")
  end
end

function Node:_peer(name)
  local p = self._peers[name]
  if p == nil then
    p = { name = name, state = "down", changed = self._clock.cond() }
    self._peers[name] = p
  end
  return p
end

-- The link to send to for dst: the direct one, or the first hop of the
-- shortest known route.
function Node:_route(dst)
  local link = self._up[dst]
  if link then return link end
  local hop = self._routes:next_hop(dst)
  return hop and self._up[hop]
end

-- Sends an encoded envelope towards dst: true | nil, err. To this node
-- itself, it is dispatched in a task of its own, as if it had arrived.
function Node:_send_frame(dst, frame)
  if dst == self.name then
    self._clock.spawn(function() self:_dispatch(nil, decode(frame), frame) end)
    return true
  end
  local link = self:_route(dst)
  if link == nil then return nil, "unreachable" end
  local ok, err = link:send(frame)
  if ok then return true end
  if err == "frame too large" then return nil, err end
  return nil, "unreachable"
end

-- Current links, copied: sending may yield, and the set may change then.
function Node:_links()
  local list = {}
  for _, link in pairs(self._up) do list[#list + 1] = link end
  return list
end

function Node:_emit(name, state)
  if not self._running then return end
  for _, fn in ipairs(self._peer_fns) do self._clock.spawn(fn, name, state) end
end

---------------------------------------------------------------- links

function Node:_new_link(conn, peer, inc, addr, dialler)
  self._serial = self._serial + 1
  return setmetatable({ node = self, conn = conn, peer = peer, inc = inc, addr = addr,
                        dialler = dialler, serial = self._serial }, Link)
end

-- true | nil, err. A failed send ends the link, except for an oversized
-- frame, which is the sender's mistake and leaves the link usable.
function Link:send(frame)
  if self.ended or self.retired or self.conn:closed() then return nil, "closed" end
  local ok, err = self.conn:send(frame)
  if not ok and err ~= "frame too large" then self.node:_end_link(self, err) end
  return ok, err
end

-- When both nodes dialled each other, the link dialled by the lower name
-- survives; between two links dialled by the same node, the newer one.
-- Both ends apply the same rule, so both keep the same link.
local function wins(new, cur)
  if new.dialler ~= cur.dialler then return new.dialler < cur.dialler end
  return new.serial > cur.serial
end

-- Would this freshly handshaken link be kept?
function Node:_admit(link)
  local cur = self._up[link.peer]
  return cur == nil or cur.inc ~= link.inc or wins(link, cur)
end

-- Makes link the current link to its peer; false if it loses to the
-- current one. Reports "up" unless the peer was up already (a duplicate
-- replaced silently).
function Node:_adopt(link)
  if not self:_admit(link) then return false end
  local name = link.peer
  local p = self:_peer(name)
  local cur = self._up[name]
  if cur and cur.inc ~= link.inc then
    self:_end_link(cur, "the peer restarted")
  elseif cur then
    self._up[name] = nil -- so that ending it reports nothing
    self:_retire(cur)
  end
  if p.inc ~= link.inc then self._routes:forget(name) end -- a new incarnation starts afresh
  local was_up = p.state == "up"
  if p.grace then
    local g = p.grace
    p.grace = nil
    if g ~= self._clock.running() then g:cancel() end
  end
  self._up[name] = link
  -- rtt stays what the last link measured until this one's first pong
  p.inc, p.addr, p.last_seen, p.state = link.inc, link.addr, self._clock.now(), "up"
  count(self, "links_up")
  if self._routes:set_local(name, link.inc) then self:_announce(link) end
  self:_sync(link)
  p.changed:broadcast()
  if not was_up then
    self._log.info("node %s: peer %s up (%s)", self.name, name, link.addr or "?")
    self:_emit(name, "up")
  end
  return true
end

-- A duplicate that lost: nothing more is sent on it but a bye saying why
-- (so the other end waits for the winner instead of reporting the peer
-- down); its reader goes on until the other end, having read everything
-- up to the bye, closes it, so no frame in flight either way is lost.
function Node:_retire(link)
  if link.hb and link.hb ~= self._clock.running() then link.hb:cancel() end
  link:send(encode{ kind = "bye", reason = "duplicate" })
  link.retired = true
end

-- Idempotent. Reports the peer down if this was its current link.
function Node:_end_link(link, reason)
  if link.ended then return end
  link.ended = true
  self._live[link] = nil
  if link.hb and link.hb ~= self._clock.running() then link.hb:cancel() end
  link.conn:close()
  local name = link.peer
  if self._up[name] ~= link then return end
  self._up[name] = nil
  count(self, "links_down")
  local p = self._peers[name]
  if link.bye == "duplicate" and self._running then return self:_grace(p) end
  self:_peer_down(p, reason)
end

-- The other end dropped this link for a duplicate it prefers, whose
-- handshake is on its way here: wait up to `timeout` for it before
-- reporting the peer down.
function Node:_grace(p)
  local clock = self._clock
  p.grace = clock.spawn(function()
    local me = clock.running()
    clock.sleep(self.timeout)
    if p.grace ~= me then return end
    p.grace = nil
    if self._up[p.name] == nil then self:_peer_down(p, "its replacement link never came") end
  end)
end

function Node:_peer_down(p, reason)
  p.state = "down"
  if self._routes:set_local(p.name, nil) then self:_announce() end
  p.changed:broadcast()
  if self._running then
    self._log.info("node %s: peer %s down (%s)", self.name, p.name, tostring(reason))
    self:_emit(p.name, "down")
  end
end

local function heartbeat(self, link)
  local now, sleep = self._clock.now, self._clock.sleep
  while not link.ended and not link.retired do
    if not link:send(encode{ kind = "ping", t = now() }) then return end
    sleep(self.heartbeat)
  end
end

-- Reads the link until it ends: any frame resets the silence timer, and a
-- link silent for `timeout` is dropped.
function Node:_read_loop(link)
  local conn, timeout, now = link.conn, self.timeout, self._clock.now
  local yield = self._clock.yield
  self._live[link] = true
  local p = self._peers[link.peer]
  local nread = 0
  while not link.ended do
    local frame, err = conn:recv(timeout)
    if frame == nil then
      if err == "timeout" then
        err = format("silent for %g s", timeout)
      elseif err == "frame too large" then
        self:_bad("frame_too_large", link.peer, "frame announced over max_frame; link dropped")
      end
      return self:_end_link(link, err)
    end
    p.last_seen = now()
    -- Let the handlers of a burst's first frames run and their replies go
    -- out while the rest is read: the other end can start on them at once
    -- instead of waiting for the whole burst (a 2x gain across processes).
    nread = nread + 1
    if nread % 16 == 0 then yield() end
    local env, why, detail = decode(frame)
    if env then self:_dispatch(link, env, frame)
    else self:_bad(why, link.peer, detail) end
  end
end

function Node:_run_link(link)
  link.hb = self._clock.spawn(heartbeat, self, link)
  self:_read_loop(link)
end

---------------------------------------------------------------- routing

function Node:_own_links_frame()
  return envelope.encode_links(self.name, self._inc, self._seq, self._routes:local_links())
end

-- Tells every neighbour (but `except`) about this node's links; they
-- flood it on.
function Node:_announce(except)
  self._seq = self._seq + 1
  if not self._running then return end
  local frame = self:_own_links_frame()
  for _, link in ipairs(self:_links()) do
    if link ~= except then link:send(frame) end
  end
end

-- A new neighbour learns everything this node knows.
function Node:_sync(link)
  link:send(self:_own_links_frame())
  for _, e in ipairs(self._routes:entries()) do
    if link.ended then return end
    link:send(envelope.encode_links(e.origin, e.epoch, e.seq, e.links))
  end
end

-- Passes a message for another node on, one hop closer; a request that
-- cannot go on is answered "unreachable" so that its sender need not wait.
function Node:_relay(link, env)
  local hops = env.hops + 1
  if hops > self.max_hops then
    count(self, "hop_limit")
    if env.kind == "req" then self:_reply(env, nil, "unreachable") end
    return
  end
  if env.kind == "req" then
    local left = env.ttl - (link and link.rtt or 0) / 2
    if left <= 0 then return count(self, "expired") end
    env.ttl = left
  end
  local out = self:_route(env.dst)
  if out == nil then
    count(self, "unroutable")
    if env.kind == "req" then self:_reply(env, nil, "unreachable") end
    return
  end
  env.hops = hops
  if out:send(encode(env)) then count(self, "relayed") end
end

---------------------------------------------------------------- workers

-- Handlers run in worker tasks: a parked worker is woken for the next
-- message rather than a task created for each (half the cost per request).
-- A handler that blocks keeps its worker; the next message gets another,
-- spawned when none is idle. At most MAX_IDLE wait for work.
local MAX_IDLE = 64

local function worker(self, w)
  local idle = self._idle
  while true do
    local job = w.job
    if job then
      w.job = nil
      job(self, w.fn, w.env, w.deadline)
    end
    if not self._running or #idle >= MAX_IDLE then return end
    idle[#idle + 1] = w
    w.cond:wait()
  end
end

-- Runs job(self, fn, env, deadline) in a worker task.
function Node:_work(job, fn, env, deadline)
  local idle = self._idle
  local n = #idle
  local w
  if n > 0 then
    w = idle[n]
    idle[n] = nil
  else
    w = { cond = self._clock.cond() }
  end
  w.job, w.fn, w.env, w.deadline = job, fn, env, deadline
  if n > 0 then w.cond:signal()
  else w.task = self._clock.spawn(worker, self, w) end
end

---------------------------------------------------------------- dispatch

local function handler_error(e)
  return { msg = tostring(e), tb = traceback(tostring(e), 2) }
end

local function run_message(self, fn, env)
  local msg = { from = env.src, to = env.dst, type = env.type, hops = env.hops }
  local ok, e = xpcall(fn, handler_error, env.body, msg)
  if not ok then
    count(self, "handler_errors")
    self._log.warn("node %s: handler for %q failed: %s", self.name, env.type, e.tb)
  end
end

local function run_request(self, fn, env, deadline)
  local msg = { from = env.src, to = env.dst, type = env.type, id = env.id, hops = env.hops,
                deadline = deadline }
  local ok, r = xpcall(fn, handler_error, env.body, msg)
  local rep = { kind = "rep", src = self.name, dst = env.src, id = env.id, type = env.type, hops = 0 }
  if ok then
    rep.body = r == nil and null or r
  else
    count(self, "handler_errors")
    self._log.warn("node %s: handler for %q failed: %s", self.name, env.type, r.tb)
    rep.err = "remote error: " .. r.msg
  end
  local fine, frame = pcall(encode, rep)
  if not fine then
    rep.body, rep.err = nil, "remote error: the reply cannot be sent as JSON: " .. tostring(frame)
    frame = encode(rep)
  end
  self._dedup:finish(env.src, env.inc, env.id, frame)
  self:_send_frame(env.src, frame)
end

-- Answers a request from here: its destination, or a relay answering for
-- it (then `src` still names the destination, which is whom the requester
-- waits for, and `by` names the relay).
function Node:_reply(env, body, err)
  local frame = encode{ kind = "rep", src = env.dst, dst = env.src, id = env.id, type = env.type,
                        hops = 0, body = body, err = err, by = env.dst ~= self.name and self.name or nil }
  return self:_send_frame(env.src, frame)
end

local K = {}

function K.ping(_, link, env)
  link:send(encode{ kind = "pong", t = env.t })
end

function K.pong(self, link, env)
  local rtt = self._clock.now() - env.t
  if rtt < 0 then return end
  link.rtt = rtt
  if self._up[link.peer] == link then self._peers[link.peer].rtt = rtt end
end

function K.links(self, link, env, frame)
  if not self._routes:update(env.origin, env.epoch, env.seq, envelope.links(env.links)) then return end
  for _, out in ipairs(self:_links()) do
    if out ~= link then out:send(frame) end
  end
end

function K.bye(self, link, env)
  link.bye = env.reason or "bye"
  self:_end_link(link, "said bye: " .. link.bye)
end

local function handshake_again(self, link, env)
  self:_bad("bad_envelope", link and link.peer or self.name, env.kind .. " on an established link")
end
K.hello, K.welcome, K.reject = handshake_again, handshake_again, handshake_again

function K.msg(self, link, env)
  if env.dst ~= self.name then return self:_relay(link, env) end
  local fn = self._handlers[env.type]
  if fn == nil then
    count(self, "no_handler")
    -- a sender's mistake nobody else would see; at most one line a second
    local now = self._clock.now()
    if (self._nh_t or -1) + 1 <= now then
      self._nh_t = now
      self._log.warn("node %s: no handler for message %q from %s: dropped (counted in no_handler)",
                     self.name, env.type, env.src)
    end
    return
  end
  count(self, "received")
  self:_work(run_message, fn, env)
end

function K.req(self, link, env)
  if env.dst ~= self.name then return self:_relay(link, env) end
  -- The deadline travels as time left; half the link's RTT went in transit.
  local left = env.ttl - (link and link.rtt or 0) / 2
  if left <= 0 then return count(self, "expired") end
  local fn = self._handlers[env.type]
  if fn == nil then
    count(self, "no_handler")
    return self:_reply(env, nil, "no handler")
  end
  local state, reply = self._dedup:begin(env.src, env.inc, env.id)
  if state ~= "new" then
    count(self, "dup_requests")
    if state == "done" then self:_send_frame(env.src, reply) end
    return
  end
  count(self, "served")
  self:_work(run_request, fn, env, self._clock.now() + left)
end

function K.rep(self, link, env)
  if env.dst ~= self.name then return self:_relay(link, env) end
  local p = self._pending[env.id]
  if p == nil or p.done or p.to ~= env.src then return count(self, "late_replies") end
  p.done, p.body, p.err = true, env.body, env.err
  p.cond:signal()
end

function Node:_dispatch(link, env, frame)
  if env == nil then return end
  K[env.kind](self, link, env, frame)
end

---------------------------------------------------------------- handshakes

-- Accepting side: a hello within handshake_timeout, then welcome (or
-- reject), then the link runs in this task.
function Node:_serve_inbound(conn)
  local from = peer_of(conn)
  self._handshaking[conn] = true
  local frame, err = conn:recv(self.handshake_timeout)
  self._handshaking[conn] = nil
  if not self._running then return conn:close() end
  if frame == nil then
    if err == "timeout" then
      self:_bad("handshake_timeout", from, format("no hello within %g s", self.handshake_timeout))
    elseif err == "frame too large" then
      self:_bad("frame_too_large", from, "before the handshake")
    end
    return conn:close()
  end
  local env, why, detail = decode(frame)
  local function refuse(reason)
    conn:send(encode{ kind = "reject", reason = reason, node = self.name })
    conn:close()
  end
  if env == nil then
    self:_bad(why, from, detail)
    return refuse("expected hello")
  end
  if env.kind ~= "hello" then
    self:_bad("bad_handshake", from, "expected hello, got " .. env.kind)
    return refuse("expected hello")
  end
  if env.v < 1 then
    self:_bad("bad_handshake", from, "protocol version " .. tostring(env.v))
    return refuse("version")
  end
  if env.node == self.name then
    count(self, "rejected")
    return refuse("same name")
  end
  local link = self:_new_link(conn, env.node, env.inc, env.listen or from, env.node)
  if not self:_admit(link) then
    count(self, "rejected")
    return refuse("duplicate")
  end
  conn:send(encode{ kind = "welcome", v = M.PROTOCOL, node = self.name, inc = self._inc,
                    listen = self.listen_addr })
  if not self:_adopt(link) then return conn:close() end
  self:_run_link(link)
end

function Node:_accept_loop(listener)
  while self._running do
    local ok, conn = pcall(listener.accept, listener)
    if not ok or conn == nil then return end
    self._clock.spawn(self._serve_inbound, self, conn)
  end
end

-- Dialling side: hello, then welcome (or reject) within
-- handshake_timeout. Runs the link in this task until it ends. Returns
-- true when a handshake completed, else false and why.
function Node:_dial_once(addr)
  -- stop() leaves a connecting dialler be (cancelling it would strand the
  -- half-open socket); it sees the node stopped when connect returns.
  self._connecting[addr] = true
  local conn, err = self._transport.connect(addr, { timeout = self.handshake_timeout, max_frame = self.max_frame })
  self._connecting[addr] = nil
  if conn == nil then return false, err end
  if not self._running then conn:close(); return false, "stopped" end
  self._handshaking[conn] = true
  local frame
  if conn:send(encode{ kind = "hello", v = M.PROTOCOL, node = self.name, inc = self._inc,
                       listen = self.listen_addr }) then
    frame, err = conn:recv(self.handshake_timeout)
  end
  self._handshaking[conn] = nil
  if not self._running then conn:close(); return false, "stopped" end
  if frame == nil then
    if err == "timeout" then self:_bad("handshake_timeout", addr, "no welcome") end
    conn:close()
    return false, err or "closed"
  end
  local env, why, detail = decode(frame)
  if env == nil or (env.kind ~= "welcome" and env.kind ~= "reject") then
    if env == nil then self:_bad(why, addr, detail)
    else self:_bad("bad_handshake", addr, "expected welcome, got " .. env.kind) end
    conn:close()
    return false, "bad handshake"
  end
  if env.node then self._addr_peer[addr] = env.node end
  if env.kind == "reject" then
    conn:close()
    return env.reason == "duplicate", env.reason
  end
  if env.v < 1 or env.v > M.PROTOCOL then
    self:_bad("bad_handshake", addr, "welcome for protocol version " .. tostring(env.v))
    conn:close()
    return false, "version"
  end
  if env.node == self.name then conn:close(); return false, "same name" end
  local link = self:_new_link(conn, env.node, env.inc, addr, self.name)
  if self:_adopt(link) then
    self:_run_link(link)
  else
    self:_retire(link)
    self:_read_loop(link)
  end
  return true
end

-- Keeps addr dialled: redials with backoff while it fails, and waits while
-- the node behind it is linked (either way round).
function Node:_dial_loop(addr)
  local clock = self._clock
  local bo = backoff.new{ min = self.reconnect.min, max = self.reconnect.max, random = clock.random }
  while self._running and not host_stopping() do
    local name = self._addr_peer[addr]
    local p = name and self._peers[name]
    if p and (self._up[name] or p.grace) then
      p.changed:wait(self.timeout)
    else
      local ok, why = self:_dial_once(addr)
      if why == "same name" then
        return self._log.warn("node %s: the node at %s has this node's name; not dialling it", self.name, addr)
      end
      if ok then bo:reset()
      else self._log.debug("node %s: dial %s: %s", self.name, addr, tostring(why)) end
      if not self._running then return end
      clock.sleep(bo:next())
    end
  end
end

---------------------------------------------------------------- public API

-- n:on(type, fn): fn(body, msg) handles messages and requests of that
-- type, each in its own task; its return value is a request's reply.
function Node:on(mtype, fn)
  if type(mtype) ~= "string" then error("bad argument #1 to 'on' (string expected)", 2) end
  if fn ~= nil and type(fn) ~= "function" then error("bad argument #2 to 'on' (function expected)", 2) end
  self._handlers[mtype] = fn
  return self
end

-- n:on_peer(fn): fn(name, "up" | "down") in a task of its own, in order.
function Node:on_peer(fn)
  if type(fn) ~= "function" then error("bad argument #1 to 'on_peer' (function expected)", 2) end
  self._peer_fns[#self._peer_fns + 1] = fn
  return self
end

-- Listens (if asked) and starts dialling the peers: true | nil, err.
function Node:start()
  if self._running ~= nil then error("node " .. self.name .. " was started already", 2) end
  local clock = self._clock
  self._inc = floor(clock.time() * 1000)
  self._running = true
  require("luacomm.registry").nodes[self] = true -- /metrics and /peers list it
  if self.listen then
    local l, err = self._transport.listen(self.listen, { max_frame = self.max_frame })
    if l == nil then
      self._running = false
      return nil, err
    end
    self._listener = l
    self.listen_addr = addr_string(l:addr()) or self.listen
    clock.spawn(self._accept_loop, self, l)
  end
  self._seq = 1
  for _, addr in ipairs(self.peer_addrs) do
    if not self._dialers[addr] then self._dialers[addr] = clock.spawn(self._dial_loop, self, addr) end
  end
  return true
end

-- Leaves the cluster: says bye on every link, stops listening and
-- dialling, and ends pending requests with "stopped". Peers are marked
-- down without on_peer calls. Idempotent.
function Node:stop()
  if not self._running then return end
  self._running = false
  require("luacomm.registry").nodes[self] = nil
  local me = self._clock.running()
  if self._listener then self._listener:close() end
  for addr, t in pairs(self._dialers) do
    if t ~= me and not self._connecting[addr] then t:cancel() end
  end
  for conn in pairs(self._handshaking) do conn:close() end
  for i = #self._idle, 1, -1 do
    local w = self._idle[i]
    self._idle[i] = nil
    if w.task ~= me then w.task:cancel() end
  end
  local bye = encode{ kind = "bye", reason = "stop" }
  local live = {}
  for link in pairs(self._live) do live[#live + 1] = link end
  for _, link in ipairs(live) do
    link:send(bye)
    self:_end_link(link, "stopped")
  end
  for _, p in pairs(self._peers) do
    if p.grace and p.grace ~= me then p.grace:cancel() end
    p.grace, p.state = nil, "down"
  end
  for _, p in pairs(self._pending) do
    if not p.done then
      p.done, p.err = true, "stopped"
      p.cond:signal()
    end
  end
end

local function check_target(to, mtype)
  if type(to) ~= "string" then error("bad argument #1 (node name expected)", 3) end
  if type(mtype) ~= "string" then error("bad argument #2 (message type expected)", 3) end
end

-- At most once: true, or nil, err ("unreachable", "stopped", "frame too large").
function Node:send(to, mtype, body)
  check_target(to, mtype)
  if not self._running then return nil, "stopped" end
  local frame = encode{ kind = "msg", src = self.name, dst = to, type = mtype, hops = 0, body = body }
  local ok, err = self:_send_frame(to, frame)
  if ok then count(self, "sent") end
  return ok, err
end

-- To every other node reachable now, directly or routed; returns how many
-- it went to.
function Node:broadcast(mtype, body)
  if type(mtype) ~= "string" then error("bad argument #1 to 'broadcast' (message type expected)", 2) end
  if not self._running then return 0 end
  local body_json = body ~= nil and encode(body) or nil
  local n = 0
  for _, dst in ipairs(self._routes:reachable()) do
    local frame = envelope.encode_with_body({ kind = "msg", src = self.name, dst = dst, type = mtype, hops = 0 },
                                            body_json)
    if self:_send_frame(dst, frame) then n = n + 1 end
  end
  count(self, "broadcasts")
  count(self, "sent", n)
  return n
end

local function check_request_opts(opts)
  if opts == nil then return end
  if type(opts) ~= "table" then error("bad argument #4 to 'request' (table expected)", 3) end
  local t, r = opts.timeout, opts.retries
  if t ~= nil and (type(t) ~= "number" or t ~= t or t <= 0) then
    error("request: timeout must be a positive number", 3)
  end
  if r ~= nil and (math.type(r) ~= "integer" or r < 0) then error("request: retries must be an integer >= 0", 3) end
end

-- One try: nil once the request is answered (p.done), else the error.
function Node:_try(p, frame, timeout)
  if p.done then return nil end
  local ok, err = self:_send_frame(p.to, frame)
  if not ok then return err end
  local now = self._clock.now
  local deadline = now() + timeout
  while not p.done do
    local left = deadline - now()
    if left <= 0 then return "timeout" end
    p.cond:wait(left)
  end
  return nil
end

-- reply, or nil, err: "timeout", "unreachable", "no handler",
-- "remote error: <message>", "stopped". A reply of nil arrives as
-- comm.json.null, so a reply is never nil.
function Node:request(to, mtype, body, opts)
  check_target(to, mtype)
  check_request_opts(opts)
  if not self._running then return nil, "stopped" end
  local timeout = opts and opts.timeout or self.request_timeout
  local retries = opts and opts.retries or 0
  local id = self._next_id + 1
  -- the same frame (same id) for every try: that is what dedup keys on
  local frame = encode{ kind = "req", src = self.name, dst = to, type = mtype, id = id, inc = self._inc,
                        hops = 0, ttl = timeout, body = body }
  self._next_id = id
  local p = { to = to, cond = self._clock.cond() }
  self._pending[id] = p
  self._npending = self._npending + 1
  count(self, "requests")
  local err, bo
  for try = 0, retries do
    if try > 0 then
      count(self, "retries")
      bo = bo or backoff.new{ min = self.retry.min, max = self.retry.max, random = self._clock.random }
      self._clock.sleep(bo:next())
    end
    err = self:_try(p, frame, timeout)
    if err == nil then
      err = p.err
      if err == nil then break end
      if RETRYABLE[err] and try < retries and self._running then p.done, p.err = false, nil end
    end
    if not RETRYABLE[err] or not self._running then break end
  end
  self._pending[id] = nil
  self._npending = self._npending - 1
  if err then
    if err == "timeout" then count(self, "timeouts") end
    return nil, err
  end
  count(self, "replies")
  local r = p.body
  if r == nil then return null end
  return r
end

-- { [name] = { state = "up"|"down", addr =, rtt =, last_seen = } } for
-- every node this one has had a direct link with. rtt in seconds (nil
-- until the first heartbeat is answered); last_seen in clock.now() terms.
function Node:peers()
  local out = {}
  for name, p in pairs(self._peers) do
    out[name] = { state = p.state, addr = p.addr, rtt = p.rtt, last_seen = p.last_seen }
  end
  return out
end

-- { [name] = { via = first hop, hops = n } } for every node reachable now.
function Node:routes()
  local out = {}
  for _, dst in ipairs(self._routes:reachable()) do
    local via, hops = self._routes:next_hop(dst)
    out[dst] = { via = via, hops = hops }
  end
  return out
end

-- The counters (see COUNTERS) and a few gauges: links, pending, dedup.
function Node:stats()
  local out = {}
  for k, v in pairs(self._stats) do out[k] = v end
  local links = 0
  for _ in pairs(self._up) do links = links + 1 end
  out.links, out.pending, out.dedup = links, self._npending, self._dedup:size()
  return out
end

M.Node = Node
return M
