-- The JSON handler of the HTTP bench: every request becomes an n:request
-- from node "front" to node "back" (both in this process, linked over
-- loopback) and the reply goes back as JSON.
local comm = require "luacomm"
local http = require "luacomm.http"
local node = require "luacomm.node"

local port = assert(..., "usage: http_node.lua PORT")
local back = node.new{ name = "back", listen = "127.0.0.1:0" }
back:on("lookup", function(body) return { key = body.key, value = #body.key, by = "back" } end)
assert(back:start())
local front = node.new{ name = "front", peers = { back.listen_addr } }
assert(front:start())
while not (front:peers().back and front:peers().back.state == "up") do comm.sleep(0.01) end

local JSON = { ["content-type"] = "application/json" }
assert(http.serve("127.0.0.1:" .. port, function(req)
  local r, err = front:request("back", "lookup", { key = req.path }, { timeout = 5 })
  if not r then return 502, JSON, comm.json.encode{ error = err } end
  return 200, JSON, comm.json.encode(r)
end, { backlog = 1024 }))
print("ready")
