-- luacomm.node.options: node.new's options, checked once (a bad one raises
-- at the caller's line) and given their defaults.
local auth = require "luacomm.node.auth"
local envelope = require "luacomm.node.envelope"

local type, ipairs, error = type, ipairs, error
local format = string.format

local M = {}
M._VERSION = "0.1.0"

local function positive(opts, k, def)
  local v = opts[k]
  if v == nil then return def end
  if type(v) ~= "number" or v ~= v or v <= 0 then error(format("node.new: %s must be a positive number", k), 4) end
  return v
end

local function bounds(t, what, def_min, def_max)
  t = t or {}
  if type(t) ~= "table" then error("node.new: " .. what .. " must be a table { min =, max = }", 4) end
  local lo, hi = t.min or def_min, t.max or def_max
  if type(lo) ~= "number" or lo <= 0 or type(hi) ~= "number" or hi < lo then
    error("node.new: " .. what .. " needs 0 < min <= max", 4)
  end
  return { min = lo, max = hi }
end

local function check_peers(peers)
  if peers == nil then return {} end
  if type(peers) ~= "table" then error("node.new: peers must be a list of addresses", 4) end
  local list = {}
  for i, a in ipairs(peers) do
    if type(a) ~= "string" then error("node.new: peers[" .. i .. "] must be an address string", 4) end
    list[i] = a
  end
  return list
end

-- node.new's tls: { cert =, key =, ca = } (cert and key required: a node
-- both accepts and dials, and proves its name either way).
local function check_tls(t)
  if t == nil then return nil end
  if type(t) ~= "table" then error("node.new: tls must be a table { cert =, key =, ca = }", 4) end
  for _, k in ipairs{ "cert", "key" } do
    if type(t[k]) ~= "string" then error("node.new: tls." .. k .. " must be a file name", 4) end
  end
  if t.ca ~= nil and type(t.ca) ~= "string" then error("node.new: tls.ca must be a file name", 4) end
  return { cert = t.cert, key = t.key, ca = t.ca }
end

-- The node's settings from opts (see node.new), or raises.
function M.check(opts)
  if type(opts) ~= "table" then error("node.new: options table expected", 3) end
  if type(opts.name) ~= "string" or opts.name == "" or #opts.name > envelope.MAX_NAME then
    error("node.new: name must be a non-empty string of at most " .. envelope.MAX_NAME .. " bytes", 3)
  end
  if opts.listen ~= nil and type(opts.listen) ~= "string" then
    error("node.new: listen must be an address string", 3)
  end
  local timeout = positive(opts, "timeout", 2.0)
  local d = opts.dedup or {}
  return {
    name = opts.name,
    listen = opts.listen,
    peer_addrs = check_peers(opts.peers),
    heartbeat = positive(opts, "heartbeat", 0.5),
    timeout = timeout,
    handshake_timeout = positive(opts, "handshake_timeout", timeout),
    reconnect = bounds(opts.reconnect, "reconnect", 0.05, 5),
    retry = bounds(opts.retry, "retry", 0.05, 1),
    request_timeout = positive(opts, "request_timeout", 5),
    max_hops = positive(opts, "max_hops", 16),
    max_frame = opts.max_frame,
    max_inflight = positive(opts, "max_inflight", 1024),
    max_nodes = positive(opts, "max_nodes", 1024),
    dedup = { ttl = d.ttl, max = d.max },
    _secret = auth.secret(opts),
    _tls = check_tls(opts.tls),
  }
end

return M
