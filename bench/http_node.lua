-- The JSON handler of the HTTP bench: every request becomes an n:request
-- from node "front" to node "back" and the reply goes back as JSON.
--
--   http_node.lua PORT          both nodes in this process, linked over
--                               loopback (the whole cost on one core)
--   http_node.lua PORT ADDR     "back" is another process listening at ADDR
--                               (bench/http_back.lua), as a gateway in front
--                               of a cluster node runs
local comm = require "luacomm"
local http = require "luacomm.http"
local node = require "luacomm.node"

local port, back_addr = ...
assert(port, "usage: http_node.lua PORT [BACK_ADDR]")
if not back_addr then
  local back = node.new{ name = "back", listen = "127.0.0.1:0" }
  back:on("lookup", function(body) return { key = body.key, value = #body.key, by = "back" } end)
  assert(back:start())
  back_addr = back.listen_addr
end
local front = node.new{ name = "front", peers = { back_addr } }
assert(front:start())
while not (front:peers().back and front:peers().back.state == "up") do comm.sleep(0.01) end

local JSON = { ["content-type"] = "application/json" }
assert(http.serve("127.0.0.1:" .. port, function(req)
  local r, err = front:request("back", "lookup", { key = req.path }, { timeout = 5 })
  if not r then return 502, JSON, comm.json.encode{ error = err } end
  return 200, JSON, comm.json.encode(r)
end, { backlog = 1024 }))
print("ready")
