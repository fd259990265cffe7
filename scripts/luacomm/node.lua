-- luacomm.node: the standard node behaviour of CONTRACT §6 — links with a
-- versioned handshake, heartbeats and failure detection, send / broadcast /
-- request with retries and receiver-side dedup, and link-state routing.
-- docs/PROTOCOL.md describes the wire protocol this file speaks. The link
-- lifecycle lives in node/link.lua, request/reply in node/request.lua.
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
local routes = require "luacomm.node.routes"
local dedup = require "luacomm.node.dedup"
local envelope = require "luacomm.node.envelope"
local link = require "luacomm.node.link"
local request = require "luacomm.node.request"
local flood = require "luacomm.node.flood"
local options = require "luacomm.node.options"
local workers = require "luacomm.node.workers"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local setmetatable, xpcall = setmetatable, xpcall
local floor, traceback = math.floor, debug.traceback
local encode = envelope.encode

local M = {}
M._VERSION = "0.2.0"
M.PROTOCOL = envelope.VERSION

M.transport = { listen = comm.listen, connect = comm.connect }
M.clock = { now = comm.now, time = comm.time, sleep = comm.sleep, yield = comm.yield,
            spawn = comm.spawn, running = comm.running, cond = comm.cond, random = math.random }

-- Counters reported by n:stats(), all starting at 0.
local COUNTERS = {
  "sent", "received", "broadcasts", "requests", "served", "replies", "retries", "timeouts",
  "late_replies", "dup_requests", "relayed", "expired", "hop_limit", "unroutable",
  "no_handler", "handler_errors", "links_up", "links_down", "rejected", "auth_failures",
  "throttled", "over_limit",
  -- bad input from peers; bad_input is their sum
  "bad_input", "bad_json", "bad_envelope", "unknown_kind", "frame_too_large",
  "bad_handshake", "handshake_timeout",
}

local Node = {}
Node.__index = Node

-- node.new(opts): see CONTRACT §6. Extra options: handshake_timeout
-- (default: timeout), request_timeout (5), retry = { min, max } (backoff
-- between request tries), max_hops (16), max_frame, dedup = { ttl, max },
-- log (a comm.log-like table), transport, clock (the seam above).
function M.new(opts)
  local self = options.check(opts)
  local clock = opts.clock or M.clock
  setmetatable(self, Node)
  local fields = {
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
    _npeers = 0,
    _handshaking = {},     -- conns between accept/connect and the end of the handshake
    _idle = {},            -- parked worker tasks (node/workers.lua)
    _live = {},            -- every link being read: current and retired
    _dialers = {},         -- address -> its dialler task
    _connecting = {},      -- address -> true while its dialler is in connect
    _next_id = 0,
    _serial = 0,
    _seq = 0,
    _stats = {},
    _warn_t = -1, _warn_n = 0,
  }
  for k, v in pairs(fields) do self[k] = v end
  self._dedup = dedup.new{ ttl = self.dedup.ttl, max = self.dedup.max, senders = self.max_nodes, now = clock.now }
  self._routes = routes.new(self.name, self.max_nodes)
  for _, k in ipairs(COUNTERS) do self._stats[k] = 0 end
  return self
end

---------------------------------------------------------------- small helpers

function Node:_count(k, n)
  local s = self._stats
  s[k] = s[k] + (n or 1)
end

-- What peers do wrong is counted every time, logged at most 10 times a
-- second.
function Node:_warn(fmt, ...)
  local now = self._clock.now()
  if now - self._warn_t >= 1 then
    if self._warn_n > 10 then
      self._log.warn("node %s: %d more warning(s) about peers not logged", self.name, self._warn_n - 10)
    end
    self._warn_t, self._warn_n = now, 0
  end
  self._warn_n = self._warn_n + 1
  if self._warn_n <= 10 then self._log.warn(fmt, ...) end
end

function Node:_bad(why, from, detail)
  self:_count(why)
  self:_count("bad_input")
  self:_warn("node %s: bad input from %s: %s%s", self.name, from, why, detail and (" (" .. detail .. ")") or "")
end


-- The record of a peer, made on its first link. Past max_nodes records,
-- those of peers that are down are forgotten.
function Node:_peer(name)
  local p = self._peers[name]
  if p == nil then
    if self._npeers >= self.max_nodes then
      for n, q in pairs(self._peers) do
        if q.state == "down" and not q.grace and not self._up[n] then
          self._peers[n] = nil
          self._npeers = self._npeers - 1
        end
      end
    end
    p = { name = name, state = "down", changed = self._clock.cond() }
    self._peers[name] = p
    self._npeers = self._npeers + 1
  end
  return p
end

-- The link to send to for dst: the direct one, or the first hop of the
-- shortest known route.
function Node:_route(dst)
  local l = self._up[dst]
  if l then return l end
  local hop = self._routes:next_hop(dst)
  return hop and self._up[hop]
end

-- Sends an envelope (encoded already as frame, if given) towards dst:
-- true | nil, err. To this node itself,
-- the envelope is dispatched as it is, in a task of its own, as if it had
-- arrived: never encoded. Over a direct link the body goes inside the
-- header; through relays, after it (docs/PROTOCOL.md §2). Raises when the
-- body cannot be JSON.
function Node:_deliver(dst, env, frame)
  if dst == self.name then
    self._clock.spawn(self._dispatch, self, nil, env)
    return true
  end
  local l = self:_route(dst)
  if l == nil then return nil, "unreachable" end
  local ok, err = l:send(frame or encode(env, l.peer == dst))
  if ok then return true end
  if err == "frame too large" then return nil, err end
  return nil, "unreachable"
end

-- Current links, copied: sending may yield, and the set may change then.
function Node:_links()
  local list = {}
  for _, l in pairs(self._up) do list[#list + 1] = l end
  return list
end

function Node:_emit(name, state)
  if not self._running then return end
  for _, fn in ipairs(self._peer_fns) do self._clock.spawn(fn, name, state) end
end

function Node:_peer_down(p, reason)
  p.state = "down"
  if self._routes:set_local(p.name, nil) then flood.announce(self) end
  p.changed:broadcast()
  if self._running then
    self._log.info("node %s: peer %s down (%s)", self.name, p.name, tostring(reason))
    self:_emit(p.name, "down")
  end
end

---------------------------------------------------------------- dispatch

local function run_message(self, fn, env)
  local body, err = envelope.body(env)
  if err then return self:_bad("bad_json", env.src, "message body: " .. err) end
  local msg = { from = env.src, to = env.dst, type = env.type, hops = env.hops }
  local ok, e = xpcall(fn, traceback, body, msg)
  if not ok then
    self:_count("handler_errors")
    self._log.warn("node %s: handler for %q failed: %s", self.name, env.type, e)
  end
end

-- What each kind of envelope does on arrival: K[kind](node, link, env,
-- frame); link is nil for what this node sent itself.
local K = {}

function K.ping(_, l, env)
  l:send(encode{ kind = "pong", t = env.t })
end

function K.pong(self, l, env)
  local rtt = self._clock.now() - env.t
  if rtt < 0 then return end
  l.rtt = rtt
  if l.acked then l.acked = self._clock.now() end
  if self._up[l.peer] == l then self._peers[l.peer].rtt = rtt end
end

K.links = flood.on_links

function K.bye(_, l, env)
  l.bye = env.reason or "bye"
  l:finish("said bye: " .. l.bye)
end

local function handshake_again(self, l, env)
  self:_bad("bad_envelope", l and l.peer or self.name, env.kind .. " on an established link")
end
K.hello, K.welcome, K.reject = handshake_again, handshake_again, handshake_again
K.challenge, K.auth = handshake_again, handshake_again

function K.msg(self, l, env)
  if env.dst ~= self.name then return flood.relay(self, l, env) end
  local fn = self._handlers[env.type]
  if fn == nil then
    self:_count("no_handler")
    -- a sender's mistake nobody else would see; at most one line a second
    local now = self._clock.now()
    if (self._nh_t or -1) + 1 <= now then
      self._nh_t = now
      self._log.warn("node %s: no handler for message %q from %s: dropped (counted in no_handler)",
                     self.name, env.type, env.src)
    end
    return
  end
  self:_count("received")
  workers.run(self, run_message, fn, env)
end

function K.req(self, l, env)
  if env.dst ~= self.name then return flood.relay(self, l, env) end
  request.on_request(self, l, env)
end

function K.rep(self, l, env)
  if env.dst ~= self.name then return flood.relay(self, l, env) end
  request.on_reply(self, env)
end

-- Who may say a message is from whom: one no relay has touched (hops 0)
-- comes from the peer of its link (a relay answering for a request's
-- destination names itself in `by`, and can only say "unreachable"). A
-- relayed one is taken on its relays' word (even a node linked to this
-- one may send through others while a duplicate link is being replaced).
local ORIGINATED = { msg = true, req = true, rep = true }

local function forged(l, env)
  local src = env.src
  if env.kind == "rep" and env.by ~= nil then
    if env.err ~= "unreachable" then return true end
    src = env.by
  end
  return env.hops == 0 and src ~= l.peer
end

function Node:_dispatch(l, env, frame)
  -- the common case inline: straight from its sender, on the sender's link
  if l and ORIGINATED[env.kind] and not (env.hops == 0 and env.by == nil and env.src == l.peer)
    and forged(l, env) then
    return self:_bad("bad_envelope", l.peer, env.kind .. " from " .. (env.by or env.src) .. " on this link")
  end
  K[env.kind](self, l, env, frame)
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
    local l, err = self._transport.listen(self.listen, { max_frame = self.max_frame, tls = link.tls_listen(self) })
    if l == nil then
      self._running = false
      return nil, err
    end
    self._listener = l
    self.listen_addr = link.addr_string(l:addr()) or self.listen
    if not self._secret and not self._tls and not link.loopback(self.listen_addr) then
      self._log.warn("node %s: listening on %s with neither secret nor tls: anyone who can reach it can join"
                     .. " the cluster (links are unauthenticated)", self.name, self.listen_addr)
    end
    clock.spawn(link.accept_loop, self, l)
  end
  self._seq = 1
  for _, addr in ipairs(self.peer_addrs) do
    if not self._dialers[addr] then self._dialers[addr] = clock.spawn(link.dial_loop, self, addr, comm.stopping) end
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
  workers.stop(self)
  local bye = encode{ kind = "bye", reason = "stop" }
  local live = {}
  for l in pairs(self._live) do live[#live + 1] = l end
  for _, l in ipairs(live) do
    l:send(bye)
    l:finish("stopped")
  end
  for _, p in pairs(self._peers) do
    if p.grace and p.grace ~= me then p.grace:cancel() end
    p.grace, p.state = nil, "down"
  end
  request.stop_all(self)
end

local function check_target(to, mtype)
  if type(to) ~= "string" then error("bad argument #1 (node name expected)", 3) end
  if type(mtype) ~= "string" then error("bad argument #2 (message type expected)", 3) end
end

-- At most once: true, or nil, err ("unreachable", "stopped", "frame too large").
function Node:send(to, mtype, body)
  check_target(to, mtype)
  if not self._running then return nil, "stopped" end
  local ok, err = self:_deliver(to, { kind = "msg", src = self.name, dst = to, type = mtype, hops = 0, body = body })
  if ok then self:_count("sent") end
  return ok, err
end

-- To every other node reachable now, directly or routed; returns how many
-- it went to. The body is encoded once for all.
function Node:broadcast(mtype, body)
  if type(mtype) ~= "string" then error("bad argument #1 to 'broadcast' (message type expected)", 2) end
  if not self._running then return 0 end
  local body_json = body ~= nil and comm.json.encode(body) or nil
  local n = 0
  for _, dst in ipairs(self._routes:reachable()) do
    local env = { kind = "msg", src = self.name, dst = dst, type = mtype, hops = 0, [envelope.RAW] = body_json }
    if self:_deliver(dst, env) then n = n + 1 end
  end
  self:_count("broadcasts")
  self:_count("sent", n)
  return n
end

-- reply, or nil, err: "timeout", "unreachable", "no handler",
-- "remote error: <message>", "stopped". A reply of nil arrives as
-- comm.json.null, so a reply is never nil.
function Node:request(to, mtype, body, opts)
  check_target(to, mtype)
  return request.request(self, to, mtype, body, opts)
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
  out.dedup_senders, out.known_nodes = self._dedup:senders_count(), self._routes:size()
  return out
end

M.Node = Node
return M
