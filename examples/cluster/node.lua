-- A replicated key-value store on three (or more) luacomm nodes, written as
-- a reloadable service: edit this file and send SIGHUP, and the handlers
-- below answer with the new code while the links, the data and every
-- request in flight carry on.
--
--   luacomm [--workers N] examples/cluster/node.lua NAME LISTEN [PEER...]
--   e.g. luacomm examples/cluster/node.lua a 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
--
-- Every node takes writes. A write gets a Lamport timestamp (counter, node
-- name) and is broadcast to every node up; a replica keeps the newest
-- version of each key (last writer wins). A node that (re)joins copies
-- what a peer has, so a restarted node catches up.
--
-- Requests (see client.lua): put {key, value}, get {key}, info.
-- Messages: replicate (node to node), say (printed).
local comm = require "luacomm"
local node = require "luacomm.node"

local M = {}

M.VERSION = "v1"

local function log(state, fmt, ...)
  print(("[%s] " .. fmt):format(state.name, ...))
end

-- Is version a = {t, by} newer than b?
local function newer(a, b)
  if b == nil then return true end
  if a.t ~= b.t then return a.t > b.t end
  return a.by > b.by
end

-- Keeps entry for key if it is newer than what the store has.
function M.merge(state, key, entry)
  state.clock = math.max(state.clock, entry.t)
  if newer(entry, state.store[key]) then
    state.store[key] = entry
    return true
  end
  return false
end

---------------------------------------------------------------- handlers

function M.put(state, body)
  state.clock = state.clock + 1
  local entry = { value = body.value, t = state.clock, by = state.name }
  state.store[body.key] = entry
  local n = state.node:broadcast("replicate", { key = body.key, entry = entry })
  log(state, "put %s=%s (t=%d), replicated to %d node(s)", body.key, comm.json.encode(body.value), entry.t, n)
  return { key = body.key, t = entry.t, replicas = n }
end

function M.get(state, body)
  local e = state.store[body.key]
  if not e then return comm.json.null end
  return { value = e.value, t = e.t, by = e.by, from = state.name }
end

function M.replicate(state, body, msg)
  if M.merge(state, body.key, body.entry) then
    log(state, "replicated %s=%s from %s", body.key, comm.json.encode(body.entry.value), msg.from)
  end
end

function M.dump(state)
  return state.store
end

function M.info(state)
  local keys = 0
  for _ in pairs(state.store) do keys = keys + 1 end
  local peers = {}
  for name, p in pairs(state.node:peers()) do peers[name] = p.state end
  return { node = state.name, version = M.VERSION, keys = keys, peers = peers }
end

function M.say(state, body, msg)
  log(state, "%s says: %s", msg.from, tostring(body))
end

-- A peer came up: copy what it has (it may have writes this node missed).
function M.on_peer(state, peer, what)
  log(state, "peer %s %s", peer, what)
  if what ~= "up" then return end
  local dump = state.node:request(peer, "dump", nil, { timeout = 2, retries = 2 })
  if type(dump) ~= "table" then return end
  local got = 0
  for key, entry in pairs(dump) do
    if M.merge(state, key, entry) then got = got + 1 end
  end
  if got > 0 then log(state, "caught up %d key(s) from %s", got, peer) end
end

---------------------------------------------------------------- service

local HANDLERS = { "put", "get", "replicate", "dump", "info", "say" }

-- Under `luacomm --workers N`, each worker is a node of its own: worker 1
-- is NAME on LISTEN, worker i is NAME.i on LISTEN's port + i - 1 and also
-- dials worker 1, so the workers of one machine form part of the mesh and
-- every write reaches every worker's replica. Node ports are never shared
-- between workers: a link must reach the node it names.
local function worker_identity(name, listen, peers)
  local id, count = comm.worker()
  if count == 1 or id == 1 then return name, listen, peers end
  local host, port = listen:match("^(.*):(%d+)$")
  assert(host, "LISTEN must be host:port under --workers")
  local mine = { listen }
  for _, p in ipairs(peers) do mine[#mine + 1] = p end
  return ("%s.%d"):format(name, id), ("%s:%d"):format(host, tonumber(port) + id - 1), mine
end

function M.start(state, name, listen, ...)
  assert(name and listen, "usage: luacomm node.lua NAME LISTEN [PEER...]")
  local peers
  name, listen, peers = worker_identity(name, listen, { ... })
  -- The Lamport clock starts from the wall clock (in ms), not from 0: a
  -- node that restarts has lost its counter, and from 0 its next writes
  -- would lose to the ones it made or saw before (found by
  -- examples/sim/restart_during_partition.lua; see docs/SIMULATION.md).
  state.name, state.store, state.clock = name, {}, math.floor(comm.time() * 1000)
  state.node = node.new{ name = name, listen = listen, peers = peers,
                         heartbeat = 0.2, timeout = 1.0, reconnect = { min = 0.05, max = 1 } }
  -- Each handler goes through M at every call: after a reload, new code.
  for _, h in ipairs(HANDLERS) do
    state.node:on(h, function(body, msg) return M[h](state, body, msg) end)
  end
  state.node:on_peer(function(peer, what) return M.on_peer(state, peer, what) end)
  assert(state.node:start())
  log(state, "%s listening on %s", M.VERSION, listen)
end

function M.reload(state)
  log(state, "reloaded: now %s", M.VERSION)
end

function M.stop(state)
  log(state, "stopping")
  state.node:stop()
end

return M
