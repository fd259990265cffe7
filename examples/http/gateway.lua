-- A JSON API in front of the cluster example (examples/cluster/node.lua):
-- HTTP in, n:request to the node that owns the key, JSON out.
--
--   luacomm examples/http/gateway.lua HTTP_ADDR PEER...
--   e.g. luacomm examples/http/gateway.lua 127.0.0.1:8080 127.0.0.1:7001 127.0.0.1:7002
--
--   PUT /kv/KEY    body: any JSON value   -> {"key","t","replicas","node"}
--   GET /kv/KEY                           -> {"value","t","by","from"} or 404
--   GET /info                             -> what each node up says of itself
--   GET /peers, /metrics, /health         -> comm.metrics (HTML table in a browser)
--
-- The gateway is a node of its own ("gw-" .. port) that only dials; every
-- request runs in a task of its own, so a slow node holds up only the
-- requests that wait for it.
local comm = require "luacomm"
local http = require "luacomm.http"
local node = require "luacomm.node"

local M = {}

local JSON = { ["content-type"] = "application/json" }

local function reply(status, value)
  return status, JSON, comm.json.encode(value) .. "\n"
end

-- The nodes up, sorted, so every gateway picks the same owner for a key.
function M.nodes_up(state)
  local up = {}
  for name, p in pairs(state.node:peers()) do
    if p.state == "up" then up[#up + 1] = name end
  end
  table.sort(up)
  return up
end

-- The owner of a key: a stable hash of the key over the nodes up.
function M.owner(state, key)
  local up = M.nodes_up(state)
  if #up == 0 then return nil end
  local h = 0
  for i = 1, #key do h = (h * 31 + key:byte(i)) % 2147483647 end
  return up[h % #up + 1]
end

function M.kv(state, req, key)
  local owner = M.owner(state, key)
  if not owner then return reply(503, { error = "no node up" }) end
  if req.method == "GET" then
    local v, err = state.node:request(owner, "get", { key = key }, { timeout = 1, retries = 1 })
    if err then return reply(502, { error = err, node = owner }) end
    if v == comm.json.null then return reply(404, { error = "no such key", key = key }) end
    return reply(200, v)
  elseif req.method == "PUT" then
    local value, why = comm.json.decode(req.body)
    if why then return reply(400, { error = "body is not JSON: " .. why }) end
    local r, err = state.node:request(owner, "put", { key = key, value = value }, { timeout = 1, retries = 1 })
    if err then return reply(502, { error = err, node = owner }) end
    r.node = owner
    return reply(200, r)
  end
  return 405, { allow = "GET, PUT" }, ""
end

function M.info(state)
  local out = {}
  for _, name in ipairs(M.nodes_up(state)) do
    out[name] = state.node:request(name, "info", nil, { timeout = 1 }) or comm.json.null
  end
  return reply(200, out)
end

function M.handle(state, req)
  local key = req.path:match("^/kv/([%w_.%-]+)$")
  if key then return M.kv(state, req, key) end
  if req.path == "/info" and req.method == "GET" then return M.info(state) end
  return comm.metrics.handler(req) -- /peers, /metrics, /health, else 404
end

function M.start(state, listen, ...)
  assert(listen and ..., "usage: luacomm gateway.lua HTTP_ADDR PEER...")
  local port = listen:match(":(%d+)$")
  state.node = node.new{ name = "gw-" .. port, peers = { ... }, heartbeat = 0.2, timeout = 1.0,
                         reconnect = { min = 0.05, max = 1 } }
  assert(state.node:start())
  -- through M at each request: a reload (SIGHUP) changes the API in place
  state.srv = assert(http.serve(listen, function(req) return M.handle(state, req) end))
  print(("gateway on http://%s, dialling %s"):format(listen, table.concat({ ... }, " ")))
end

function M.stop(state)
  state.node:stop()
end

return M
