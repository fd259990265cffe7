-- The node the HTTP bench's JSON handler asks when it runs in a process of
-- its own (bench/http_node.lua PORT ADDR): node "back" listening on PORT.
local node = require "luacomm.node"
local port = assert(..., "usage: http_back.lua PORT")
local back = node.new{ name = "back", listen = "127.0.0.1:" .. port }
back:on("lookup", function(body) return { key = body.key, value = #body.key, by = "back" } end)
assert(back:start())
