-- luacomm.node.link: the life of a link between two nodes — the
-- handshakes on both sides, dialling and redialling, adoption as the
-- current link to a peer (one link per pair), heartbeats, the read loop,
-- and the end. A Link belongs to its node and calls back into it only for
-- what is the node's: counting, routing news, dispatch and peer state.
-- docs/PROTOCOL.md §3-§6 is the reference.
local backoff = require "luacomm.node.backoff"
local envelope = require "luacomm.node.envelope"
local auth = require "luacomm.node.auth"
local flood = require "luacomm.node.flood"

local setmetatable, tostring, pcall, type, ipairs = setmetatable, tostring, pcall, type, ipairs
local format = string.format
local encode, decode = envelope.encode, envelope.decode

local M = {}
M._VERSION = "0.2.0"

local Link = {}
Link.__index = Link
M.Link = Link

function M.addr_string(host, port)
  if not host then return nil end
  if port == nil then return "unix:" .. host end -- addr()/peer() of a unix socket
  if host:find(":", 1, true) then return format("[%s]:%d", host, port) end
  return format("%s:%d", host, port)
end

-- Is this "host:port" (or "unix:path") reachable from this machine only?
function M.loopback(addr)
  if addr:sub(1, 5) == "unix:" then return true end
  local host = addr:match("^%[(.*)%]:%d+$") or addr:match("^(.*):%d+$") or addr
  return host == "::1" or host == "localhost" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

local function peer_of(conn)
  if conn:closed() then return "?" end
  local ok, host, port = pcall(conn.peer, conn)
  return ok and M.addr_string(host, port) or "?"
end

-- A link after its handshake: conn to the node `peer` (incarnation inc),
-- reached at addr, dialled by the node named `dialler`.
function M.new(node, conn, peer, inc, addr, dialler)
  node._serial = node._serial + 1
  return setmetatable({ node = node, conn = conn, peer = peer, inc = inc, addr = addr,
                        dialler = dialler, serial = node._serial, inflight = 0 }, Link)
end

-- true | nil, err. A failed send ends the link, except for an oversized
-- frame, which is the sender's mistake and leaves the link usable.
function Link:send(frame)
  if self.ended or self.retired or self.conn:closed() then return nil, "closed" end
  local ok, err = self.conn:send(frame)
  if not ok and err ~= "frame too large" then self:finish(err) end
  return ok, err
end

-- When both nodes dialled each other, the link dialled by the lower name
-- survives; between two links dialled by the same node, the newer one.
-- Both ends apply the same rule, so both keep the same link.
local function wins(new, cur)
  if new.dialler ~= cur.dialler then return new.dialler < cur.dialler end
  return new.serial > cur.serial
end

-- Would this freshly handshaken link be kept? A new life of the peer
-- replaces the current link only once that has gone quiet (two heartbeats
-- without a frame): a restarted node's old link is closed or silent, while
-- one that still carries frames says the peer lives, and the newcomer
-- claiming its name is not it.
function Link:admissible()
  local node = self.node
  local cur = node._up[self.peer]
  if cur == nil then return true end
  if cur.inc ~= self.inc then
    local seen = node._peers[self.peer].last_seen or 0
    return node._clock.now() - seen > 2 * node.heartbeat
  end
  return wins(self, cur)
end

-- Makes this the current link to its peer; false if it loses to the
-- current one. Reports "up" unless the peer was up already (a duplicate
-- replaced silently).
function Link:adopt()
  if not self:admissible() then return false end
  local node, name = self.node, self.peer
  local p = node:_peer(name)
  local cur = node._up[name]
  if cur and cur.inc ~= self.inc then
    cur:finish("the peer restarted")
  elseif cur then
    node._up[name] = nil -- so that ending it reports nothing
    cur:retire()
  end
  if p.inc ~= self.inc then node._routes:forget(name) end -- a new incarnation starts afresh
  local was_up = p.state == "up"
  if p.grace then
    local g = p.grace
    p.grace = nil
    if g ~= node._clock.running() then g:cancel() end
  end
  node._up[name] = self
  -- rtt stays what the last link measured until this one's first pong
  p.inc, p.addr, p.last_seen, p.state = self.inc, self.addr, node._clock.now(), "up"
  node:_count("links_up")
  if node._routes:set_local(name, self.inc) then flood.announce(node, self) end
  flood.sync(node, self)
  p.changed:broadcast()
  if not was_up then
    node._log.info("node %s: peer %s up (%s)", node.name, name, self.addr or "?")
    node:_emit(name, "up")
  end
  return true
end

-- A duplicate that lost: nothing more is sent on it but a bye saying why
-- (so the other end waits for the winner instead of reporting the peer
-- down); its reader goes on until the other end, having read everything
-- up to the bye, closes it, so no frame in flight either way is lost.
function Link:retire()
  if self.hb and self.hb ~= self.node._clock.running() then self.hb:cancel() end
  self:send(encode{ kind = "bye", reason = "duplicate" })
  self.retired, self.acked = true, nil -- no more pings: silence alone ends it
end

-- Ends the link; idempotent. Reports the peer down if this was its
-- current link.
function Link:finish(reason)
  if self.ended then return end
  self.ended = true
  local node = self.node
  node._live[self] = nil
  if self.hb and self.hb ~= node._clock.running() then self.hb:cancel() end
  self.conn:close()
  local name = self.peer
  if node._up[name] ~= self then return end
  node._up[name] = nil
  node:_count("links_down")
  local p = node._peers[name]
  if self.bye == "duplicate" and node._running then return M.grace(node, p) end
  node:_peer_down(p, reason)
end

-- The other end dropped a link for a duplicate it prefers, whose
-- handshake is on its way here: wait up to `timeout` for it before
-- reporting the peer down.
function M.grace(node, p)
  local clock = node._clock
  p.grace = clock.spawn(function()
    local me = clock.running()
    clock.sleep(node.timeout)
    if p.grace ~= me then return end
    p.grace = nil
    if node._up[p.name] == nil then node:_peer_down(p, "its replacement link never came") end
  end)
end

local function heartbeat(link)
  local clock = link.node._clock
  local now, sleep, period = clock.now, clock.sleep, link.node.heartbeat
  while not link.ended and not link.retired do
    if not link:send(flood.ping_frame(link.node, now())) then return end
    sleep(period)
  end
end

-- When the link must be dropped if no frame arrives first: once silent
-- for `timeout`; or, on a heartbeating link (link.acked set), once none of
-- our pings has been answered for `timeout` and the peer has also been
-- quiet for half of it (at least a heartbeat). Frames coming in prove
-- only the way in; a pong proves our pings get there too. A node that can
-- receive but no longer send (a one-way cut) hears the peer only until
-- the peer's TCP, unacknowledged, stops sending new data (0.2-0.6 s), and
-- then drops the link within `timeout` of the cut instead of `timeout`
-- after that. The quiet half keeps up a busy link whose pongs wait behind
-- a backlog (an overloaded node): dropping those floods the cluster with
-- link-state changes and overloads it further.
local function link_deadline(node, link, last)
  local d = last + node.timeout
  local acked = link.acked
  if acked and acked + node.timeout < d then
    d = math.max(acked + node.timeout, last + math.max(node.timeout / 2, node.heartbeat))
  end
  return d
end

-- Reads the link until it ends (see link_deadline).
function Link:read_loop()
  local node = self.node
  local conn, timeout, now = self.conn, node.timeout, node._clock.now
  local yield = node._clock.yield
  node._live[self] = true
  local p = node._peers[self.peer]
  local nread = 0
  local last = now()
  while not self.ended do
    local wait = link_deadline(node, self, last) - now()
    local frame, err = nil, "timeout"
    if wait > 0 then frame, err = conn:recv(wait) end
    if frame == nil then
      if err == "timeout" and self.acked and now() - self.acked >= timeout then
        err = format("no answer for %g s", timeout)
      elseif err == "timeout" then
        err = format("silent for %g s", timeout)
      elseif err == "frame too large" then
        node:_bad("frame_too_large", self.peer, "frame announced over max_frame; link dropped")
      end
      return self:finish(err)
    end
    last = now()
    if node._up[self.peer] == self then p.last_seen = last end
    -- Let the handlers of a burst's first frames run and their replies go
    -- out while the rest is read: the other end can start on them at once
    -- instead of waiting for the whole burst (a 2x gain across processes).
    nread = nread + 1
    if nread % 16 == 0 then yield() end
    local env, why, detail = decode(frame)
    if env then node:_dispatch(self, env, frame)
    else node:_bad(why, self.peer, detail) end
  end
end

-- Runs an adopted link in this task: heartbeats beside it, reading here.
function Link:run()
  self.acked = self.node._clock.now() -- the handshake went both ways
  self.hb = self.node._clock.spawn(heartbeat, self)
  self:read_loop()
end

---------------------------------------------------------------- handshakes

-- Before a peer has completed its handshake, no frame over this is read.
M.HANDSHAKE_MAX_FRAME = 65536
local DEFAULT_MAX_FRAME = 16 * 1024 * 1024

local function set_max_frame(conn, n)
  if conn.set_max_frame then conn:set_max_frame(n) end -- a simulated transport may have none
end

-- tls options for the node's connections: listening (client certificates
-- required and verified) and dialling (the chain verified; the name in the
-- certificate is checked by names_peer, against the node the peer claims
-- to be, which no address tells).
function M.tls_listen(node)
  local t = node._tls
  if t then return { cert = t.cert, key = t.key, ca = t.ca, verify = true } end
end

local function tls_dial(node)
  local t = node._tls
  if t then return { cert = t.cert, key = t.key, ca = t.ca, verify = true, verify_name = false } end
end

-- With tls: does the peer's verified certificate name `name` (its CN or
-- a DNS subjectAltName)?
local function names_peer(conn, name)
  local info = conn.tls and conn:tls()
  if type(info) ~= "table" or not info.verified then return false end
  if info.peer == name then return true end
  for _, n in ipairs(info.peer_names or {}) do
    if n == name then return true end
  end
  return false
end

-- A peer that failed authentication: counted and logged here; the peer
-- itself is told nothing.
local function auth_failed(node, from, detail)
  node:_count("auth_failures")
  node:_warn("node %s: rejected %s: authentication failed (%s)", node.name, from, detail)
end

-- The next handshake frame before `deadline`: env, or nil, why, bad (a
-- frame came but was not a valid envelope), having counted what was
-- wrong. `from` names the peer in logs.
local function recv_handshake(node, conn, deadline, from, waiting_for)
  local left = deadline - node._clock.now()
  local frame, err
  if left > 0 then frame, err = conn:recv(left) else err = "timeout" end
  if frame == nil then
    if err == "timeout" then
      node:_bad("handshake_timeout", from, format("no %s within %g s", waiting_for, node.handshake_timeout))
    elseif err == "frame too large" then
      node:_bad("frame_too_large", from, "before the handshake completed")
    end
    return nil, err or "closed"
  end
  local env, why, detail = decode(frame)
  if env == nil then
    node:_bad(why, from, detail)
    return nil, why, true
  end
  return env
end

-- Acceptor, with a secret: challenge the hello's sender, check its proof.
-- The acceptor's own proof (for the welcome), or nil: the peer failed,
-- was counted, logged and is to be dropped without a word.
local function challenge(node, conn, hello, deadline, from)
  local nonce_d = auth.unhex(hello.nonce, auth.NONCE_BYTES)
  if nonce_d == nil then
    return auth_failed(node, from, hello.nonce and "a bad nonce" or "a hello without authentication")
  end
  local nonce_a, nonce_hex = auth.nonce()
  if not conn:send(encode{ kind = "challenge", node = node.name, nonce = nonce_hex }) then return nil end
  local env = recv_handshake(node, conn, deadline, from, "auth")
  if env == nil then return auth_failed(node, from, "no proof") end
  if env.kind ~= "auth" or not auth.check(node._secret, env.mac, "dialler", nonce_d, nonce_a, hello.node, node.name) then
    return auth_failed(node, from, "a wrong proof for " .. hello.node)
  end
  return auth.proof(node._secret, "acceptor", nonce_d, nonce_a, hello.node, node.name)
end

-- Accepting side: hello (and, with a secret, challenge and proof) within
-- handshake_timeout, then welcome (or reject); returns the adopted link,
-- or nil once the connection is dealt with.
local function accept_handshake(node, conn, from)
  local deadline = node._clock.now() + node.handshake_timeout
  local env, _, bad = recv_handshake(node, conn, deadline, from, "hello")
  if not node._running then return end
  local function refuse(reason)
    conn:send(encode{ kind = "reject", reason = reason, node = node.name })
  end
  if env == nil then
    if bad then refuse("expected hello") end
    return
  end
  if env.kind ~= "hello" then
    node:_bad("bad_handshake", from, "expected hello, got " .. env.kind)
    return refuse("expected hello")
  end
  if env.v < envelope.VERSION then
    node:_bad("bad_handshake", from, "protocol version " .. tostring(env.v))
    return refuse("version")
  end
  local proof
  if node._secret then
    proof = challenge(node, conn, env, deadline, from)
    if proof == nil or not node._running then return end
  end
  if node._tls and not names_peer(conn, env.node) then
    return auth_failed(node, from, "its certificate does not name " .. env.node)
  end
  if env.node == node.name then
    node:_count("rejected")
    return refuse("same name")
  end
  local link = M.new(node, conn, env.node, env.inc, env.listen or from, env.node)
  if not link:admissible() then
    node:_count("rejected")
    return refuse("duplicate")
  end
  set_max_frame(conn, node.max_frame or DEFAULT_MAX_FRAME)
  conn:send(encode{ kind = "welcome", v = envelope.VERSION, node = node.name, inc = node._inc,
                    listen = node.listen_addr, mac = proof })
  if link:adopt() then return link end
end

local function serve_inbound(node, conn)
  local from = peer_of(conn)
  set_max_frame(conn, M.HANDSHAKE_MAX_FRAME)
  node._handshaking[conn] = true
  local link = accept_handshake(node, conn, from)
  node._handshaking[conn] = nil
  if link == nil then return conn:close() end
  link:run()
end

function M.accept_loop(node, listener)
  while node._running do
    local ok, conn = pcall(listener.accept, listener)
    if not ok or conn == nil then return end
    node._clock.spawn(serve_inbound, node, conn)
  end
end

-- Dialler, with a secret: answers the acceptor's challenge with its
-- proof, and checks the acceptor's in the welcome that follows. The
-- welcome (or a reject), or nil, why.
local function answer_challenge(node, conn, env, nonce_d, deadline, addr)
  local nonce_a = auth.unhex(env.nonce, auth.NONCE_BYTES)
  if nonce_a == nil then return nil, auth_failed(node, addr, "a bad challenge") or "auth" end
  local acceptor = env.node
  if not conn:send(encode{ kind = "auth", mac = auth.proof(node._secret, "dialler", nonce_d, nonce_a,
                                                           node.name, acceptor) }) then
    return nil, "closed"
  end
  local w, why = recv_handshake(node, conn, deadline, addr, "welcome")
  if w == nil then return nil, why or "closed" end
  if w.kind == "reject" then return w end
  if w.kind ~= "welcome" or w.node ~= acceptor
    or not auth.check(node._secret, w.mac, "acceptor", nonce_d, nonce_a, node.name, acceptor) then
    return nil, auth_failed(node, addr, "a wrong proof from " .. acceptor) or "auth"
  end
  return w
end

-- Dialling side, after connect: hello, then welcome (or reject; with
-- secrets, challenge, proof, welcome) within handshake_timeout. The
-- welcome, or a reject, or nil, why.
local function dial_handshake(node, conn, addr)
  local deadline = node._clock.now() + node.handshake_timeout
  local nonce_d, nonce_hex
  if node._secret then nonce_d, nonce_hex = auth.nonce() end
  if not conn:send(encode{ kind = "hello", v = envelope.VERSION, node = node.name, inc = node._inc,
                           listen = node.listen_addr, nonce = nonce_hex }) then
    return nil, "closed"
  end
  local env, why = recv_handshake(node, conn, deadline, addr, "welcome")
  if env == nil then return nil, why or "bad handshake" end
  if env.kind == "challenge" then
    if not node._secret then
      node._log.warn("node %s: the node at %s asks for a secret; this node has none", node.name, addr)
      return nil, "auth"
    end
    return answer_challenge(node, conn, env, nonce_d, deadline, addr)
  end
  if env.kind == "reject" then
    if node._secret then return nil, "rejected (" .. env.reason .. ") before authentication" end
    return env
  end
  if env.kind ~= "welcome" then
    node:_bad("bad_handshake", addr, "expected welcome, got " .. env.kind)
    return nil, "bad handshake"
  end
  if node._secret then return nil, auth_failed(node, addr, "a welcome without authentication") or "auth" end
  return env
end

-- Dials addr once, and runs the link in this task until it ends. Returns
-- true when a handshake completed, else false and why.
local function dial_once(node, addr)
  -- stop() leaves a connecting dialler be (cancelling it would strand the
  -- half-open socket); it sees the node stopped when connect returns.
  node._connecting[addr] = true
  local conn, err = node._transport.connect(addr, { timeout = node.handshake_timeout,
                                                    max_frame = M.HANDSHAKE_MAX_FRAME, tls = tls_dial(node) })
  node._connecting[addr] = nil
  if conn == nil then return false, err end
  if not node._running then conn:close(); return false, "stopped" end
  node._handshaking[conn] = true
  local env, why = dial_handshake(node, conn, addr)
  node._handshaking[conn] = nil
  if not node._running then conn:close(); return false, "stopped" end
  if env == nil then conn:close(); return false, why end
  node._addr_peer[addr] = env.node
  if env.kind == "reject" then
    conn:close()
    return env.reason == "duplicate", env.reason
  end
  if env.v ~= envelope.VERSION then
    node:_bad("bad_handshake", addr, "welcome for protocol version " .. tostring(env.v))
    conn:close()
    return false, "version"
  end
  if env.node == node.name then conn:close(); return false, "same name" end
  if node._tls and not names_peer(conn, env.node) then
    auth_failed(node, addr, "its certificate does not name " .. env.node)
    conn:close()
    return false, "auth"
  end
  set_max_frame(conn, node.max_frame or DEFAULT_MAX_FRAME)
  local link = M.new(node, conn, env.node, env.inc, addr, node.name)
  if link:adopt() then
    link:run()
  else
    link:retire()
    link:read_loop()
  end
  return true
end

-- Keeps addr dialled: redials with backoff while it fails, and waits while
-- the node behind it is linked (either way round). A graceful stop of the
-- host closes every connection: no redialling then, or the stop waits for
-- its deadline.
function M.dial_loop(node, addr, stopping)
  local clock = node._clock
  local bo = backoff.new{ min = node.reconnect.min, max = node.reconnect.max, random = clock.random }
  while node._running and not stopping() do
    local name = node._addr_peer[addr]
    local p = name and node._peers[name]
    if p and (node._up[name] or p.grace) then
      p.changed:wait(node.timeout)
    else
      local ok, why = dial_once(node, addr)
      if why == "same name" then
        return node._log.warn("node %s: the node at %s has this node's name; not dialling it", node.name, addr)
      end
      if ok then bo:reset()
      else node._log.debug("node %s: dial %s: %s", node.name, addr, tostring(why)) end
      if not node._running then return end
      -- a dial that timed out has waited handshake_timeout already: try
      -- again at once, so a healed network is found within that time
      if why ~= "timeout" then clock.sleep(bo:next()) end
    end
  end
end

return M
