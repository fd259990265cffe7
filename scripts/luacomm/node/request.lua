-- luacomm.node.request: request/reply between nodes — the requester's side
-- (one pending entry per request, tries with backoff, late replies
-- dropped) and the receiver's (recent ids per sender remembered, so a
-- retried request runs its handler at most once and gets the first reply
-- again). docs/PROTOCOL.md §8 is the reference.
local comm = require "luacomm"
local backoff = require "luacomm.node.backoff"
local envelope = require "luacomm.node.envelope"
local workers = require "luacomm.node.workers"
local RAW = envelope.RAW
local encode_rep = envelope.encode_rep

local type, pairs, tostring, error, xpcall, pcall = type, pairs, tostring, error, xpcall, pcall
local traceback = debug.traceback
local null = comm.json.null

local M = {}
M._VERSION = "0.1.0"

-- Errors worth another try: the next one may find a route or a reply.
local RETRYABLE = { timeout = true, unreachable = true }

local function check_opts(opts)
  if opts == nil then return end
  if type(opts) ~= "table" then error("bad argument #4 to 'request' (table expected)", 3) end
  local t, r = opts.timeout, opts.retries
  if t ~= nil and (type(t) ~= "number" or t ~= t or t <= 0 or t == math.huge) then
    error("request: timeout must be a positive number", 3)
  end
  if r ~= nil and (math.type(r) ~= "integer" or r < 0) then error("request: retries must be an integer >= 0", 3) end
end

-- One try: nil once the request is answered (p.done), else the error.
local function try(node, p, env, frame, timeout)
  if p.done then return nil end
  local ok, err = node:_deliver(p.to, env, frame)
  if not ok then return err end
  local now = node._clock.now
  local deadline = now() + timeout
  while not p.done do
    local left = deadline - now()
    if left <= 0 then return "timeout" end
    p.cond:wait(left)
  end
  return nil
end

-- node:request(to, mtype, body, opts): see Node:request.
function M.request(node, to, mtype, body, opts)
  check_opts(opts)
  if not node._running then return nil, "stopped" end
  local timeout = opts and opts.timeout or node.request_timeout
  local retries = opts and opts.retries or 0
  local id = node._next_id + 1
  -- the same frame (same id) for every try: that is what dedup keys on;
  -- encoded here, so that a body JSON cannot hold raises at the caller
  local env, frame
  if to ~= node.name then
    frame = envelope.encode_req(node.name, to, mtype, id, node._inc, 0, timeout, body)
  else -- to itself: dispatched as it is, never encoded
    env = { kind = "req", src = to, dst = to, type = mtype, id = id, inc = node._inc, hops = 0, ttl = timeout,
            body = body }
  end
  node._next_id = id
  -- every field it will hold named now: one allocation, no growing later
  local p = { to = to, cond = node._clock.cond(), done = false, body = nil, err = nil }
  node._pending[id] = p
  node._npending = node._npending + 1
  local stats = node._stats
  stats.requests = stats.requests + 1
  local err, bo
  for n = 0, retries do
    if n > 0 then
      node:_count("retries")
      bo = bo or backoff.new{ min = node.retry.min, max = node.retry.max, random = node._clock.random }
      node._clock.sleep(bo:next())
    end
    err = try(node, p, env, frame, timeout)
    if err == nil then
      err = p.err
      if err == nil then break end
      if RETRYABLE[err] and n < retries and node._running then p.done, p.err = false, nil end
    end
    if not RETRYABLE[err] or not node._running then break end
  end
  node._pending[id] = nil
  node._npending = node._npending - 1
  if err then
    if err == "timeout" then node:_count("timeouts") end
    return nil, err
  end
  stats.replies = stats.replies + 1
  local r = p.body
  if r == nil then return null end
  return r
end

-- Ends every pending request with "stopped".
function M.stop_all(node)
  for _, p in pairs(node._pending) do
    if not p.done then
      p.done, p.err = true, "stopped"
      p.cond:signal()
    end
  end
end

-- A rep for this node: completes its request, if one still waits for it
-- from that node.
function M.on_reply(node, env)
  local p = node._pending[env.id]
  -- ids restart with each incarnation: a reply to this node's previous
  -- life (it names that life's inc) must not answer a request of this one
  if p == nil or p.done or p.to ~= env.src or (env.inc ~= nil and env.inc ~= node._inc) then
    return node:_count("late_replies")
  end
  local body, err = env.body, nil
  if env[RAW] ~= nil then body, err = envelope.body(env) end
  if err then return node:_bad("bad_json", env.src, "reply body: " .. err) end
  p.done, p.body, p.err = true, body, env.err
  p.cond:signal()
end

-- Answers a request from here: its destination, or a relay answering for
-- it (then `src` still names the destination, which is whom the requester
-- waits for, and `by` names the relay).
function M.reply(node, env, body, err)
  return node:_deliver(env.src, { kind = "rep", src = env.dst, dst = env.src, id = env.id, inc = env.inc, type = env.type,
                                  hops = 0, body = body, err = err,
                                  by = env.dst ~= node.name and node.name or nil })
end

local function handler_error(e)
  return { msg = tostring(e), tb = traceback(tostring(e), 2) }
end

-- A request from link l is done: its slot frees up.
local function release(l)
  l.inflight = l.inflight - 1
  if l.slots then l.slots:signal() end
end

-- A worker's job: runs the handler, remembers its reply, sends it.
local function serve(node, fn, env, deadline)
  local body, err = env.body, nil
  if env[RAW] ~= nil then body, err = envelope.body(env) end
  if err then
    node:_bad("bad_json", env.src, "request body: " .. err)
    return node._dedup:forget(env.src, env.inc, env.id)
  end
  local msg = { from = env.src, to = env.dst, type = env.type, id = env.id, hops = env.hops,
                deadline = deadline }
  local ok, r = xpcall(fn, handler_error, body, msg)
  local rbody, rerr
  if ok then
    rbody = r == nil and null or r
  else
    node:_count("handler_errors")
    node._log.warn("node %s: handler for %q failed: %s", node.name, env.type, r.tb)
    rerr = "remote error: " .. r.msg
  end
  local src, inc, id = env.src, env.inc, env.id
  if src == node.name then -- its own request: the reply goes back as a table, never encoded
    local rep = { kind = "rep", src = src, dst = src, id = id, inc = inc, type = env.type, hops = 0, body = rbody,
                  err = rerr }
    node._dedup:finish(src, inc, id, rep)
    return node:_deliver(src, rep)
  end
  -- Remembered as the frame, a string: a cache of tables would cost the
  -- garbage collector a walk through every remembered reply at each cycle.
  local fine, frame = pcall(encode_rep, node.name, src, id, inc, env.type, rbody, rerr)
  if not fine then
    frame = encode_rep(node.name, src, id, inc, env.type, nil,
                       "remote error: the reply cannot be sent as JSON: " .. tostring(frame))
  end
  node._dedup:finish(src, inc, id, frame)
  node:_deliver(src, nil, frame)
end

local function run(node, fn, env, deadline, l)
  serve(node, fn, env, deadline)
  if l then release(l) end
end

-- At most max_inflight requests from one link run at a time: past that,
-- the link's reader (this task) waits, so the peer meets TCP backpressure
-- instead of this node growing a task per request it sends.
local function wait_slot(node, l)
  while l.inflight >= node.max_inflight and not l.ended do
    l.slots = l.slots or node._clock.cond()
    node:_count("throttled")
    l.slots:wait(node.timeout)
  end
end

-- A req for this node (link: the one it came on, nil from this node).
-- The deadline travels as time left; half the link's RTT went in transit.
function M.on_request(node, link, env)
  local left = env.ttl - (link and link.rtt or 0) / 2
  if left <= 0 then return node:_count("expired") end
  local fn = node._handlers[env.type]
  if fn == nil then
    node:_count("no_handler")
    return M.reply(node, env, nil, "no handler")
  end
  local state, rep = node._dedup:begin(env.src, env.inc, env.id)
  if state ~= "new" then
    node:_count("dup_requests")
    if state == "done" then
      if type(rep) == "string" then node:_deliver(env.src, nil, rep) else node:_deliver(env.src, rep) end
    end
    return
  end
  local stats = node._stats
  stats.served = stats.served + 1
  if link then
    if link.inflight >= node.max_inflight then wait_slot(node, link) end
    link.inflight = link.inflight + 1
  end
  workers.run(node, run, fn, env, node._clock.now() + left, link)
end

return M
