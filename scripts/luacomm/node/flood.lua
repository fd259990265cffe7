-- luacomm.node.flood: link-state news between nodes (docs/PROTOCOL.md §7)
-- and relaying (§9). A node announces its own links to its neighbours,
-- who store what is newer and flood it on; messages for other nodes go one
-- hop closer, the body's bytes untouched.
--
-- What a neighbour says about an origin is believed only as far as it can
-- be checked: a node's own announcement must carry the incarnation its
-- handshake gave (epoch), and the news of a node this one has a link to
-- must name that link's incarnation, whoever relays it; an epoch from
-- more than a day ahead of this node's clock is refused.
local envelope = require "luacomm.node.envelope"
local request = require "luacomm.node.request"

local ipairs = ipairs
local encode = envelope.encode

local M = {}
M._VERSION = "0.1.0"

-- Incarnations are milliseconds of wall-clock time; peers' clocks may be
-- this far ahead of ours.
M.MAX_SKEW_MS = 24 * 3600 * 1000

local function own_frame(node)
  return envelope.encode_links(node.name, node._inc, node._seq, node._routes:local_links())
end

-- Tells every neighbour (but `except`) about this node's links; they
-- flood it on. At once, never delayed to batch changes: a request relayed
-- to a new neighbour must not overtake the news of the link it came by,
-- or the reply finds no route back.
function M.announce(node, except)
  node._seq = node._seq + 1
  if not node._running then return end
  local frame = own_frame(node)
  for _, l in ipairs(node:_links()) do
    if l ~= except then l:send(frame) end
  end
end

-- A new neighbour learns everything this node knows.
function M.sync(node, l)
  l:send(own_frame(node))
  for _, e in ipairs(node._routes:entries()) do
    if l.ended then return end
    l:send(envelope.encode_links(e.origin, e.epoch, e.seq, e.links))
  end
end

-- Why an announcement cannot be believed, or nil; "stale" for news of a
-- linked node's other life relayed by another (a restart can race so:
-- not the relay's fault).
local function distrust(node, l, env)
  local origin, epoch = env.origin, env.epoch
  if origin == l.peer then
    if epoch ~= l.inc then return "its own news for another life" end
    return
  end
  local direct = node._up[origin]
  if direct and epoch ~= direct.inc then return "stale" end
  if epoch > node._clock.time() * 1000 + M.MAX_SKEW_MS then return "an epoch from the future" end
end

-- A links announcement from link l (never from this node itself).
function M.on_links(node, l, env, frame)
  local why = distrust(node, l, env)
  if why == "stale" then return end
  if why then return node:_bad("bad_envelope", l.peer, "links of " .. env.origin .. ": " .. why) end
  local fresh, full = node._routes:update(env.origin, env.epoch, env.seq, envelope.links(env.links))
  if full then
    node:_count("over_limit")
    return node:_warn("node %s: news of %s dropped: %d nodes known already (max_nodes)", node.name, env.origin,
                      node.max_nodes)
  end
  if not fresh then return end
  for _, out in ipairs(node:_links()) do
    if out ~= l then out:send(frame) end
  end
end

-- Passes a message for another node on, one hop closer; a request that
-- cannot go on is answered "unreachable" so that its sender need not wait.
-- The body goes on as the JSON text it came as: only the header is
-- encoded again.
function M.relay(node, from, env)
  local hops = env.hops + 1
  if hops > node.max_hops then
    node:_count("hop_limit")
    if env.kind == "req" then request.reply(node, env, nil, "unreachable") end
    return
  end
  if env.kind == "req" then
    local left = env.ttl - (from and from.rtt or 0) / 2
    if left <= 0 then return node:_count("expired") end
    env.ttl = left
  end
  local out = node:_route(env.dst)
  if out == nil then
    node:_count("unroutable")
    if env.kind == "req" then request.reply(node, env, nil, "unreachable") end
    return
  end
  env.hops = hops
  if out:send(encode(env, out.peer == env.dst and env[envelope.RAW] == nil)) then node:_count("relayed") end
end

return M
