-- Asks one node of the cluster something, as a short-lived node of its own.
--
--   luacomm examples/cluster/client.lua ADDR NODE put KEY VALUE
--   luacomm examples/cluster/client.lua ADDR NODE get KEY
--   luacomm examples/cluster/client.lua ADDR NODE info
--   luacomm examples/cluster/client.lua ADDR NODE say TEXT      (to every node)
--
-- ADDR is any node's address; NODE the node to ask (it may be another one:
-- the request is routed). Prints the reply as JSON.
local comm = require "luacomm"
local node = require "luacomm.node"

local addr, target, op, a1, a2 = ...
if not (addr and target and op) then
  io.stderr:write("usage: client.lua ADDR NODE put KEY VALUE | get KEY | info | say TEXT\n")
  os.exit(2)
end

local n = node.new{ name = ("client-%d"):format(math.floor(comm.time() * 1000) % 1000000), peers = { addr },
                    log = { debug = function() end, info = function() end, warn = comm.log.warn,
                            error = comm.log.error } }
assert(n:start())
local deadline = comm.now() + 5
while not (n:routes()[target]) and comm.now() < deadline do comm.sleep(0.02) end

local r, err
if op == "say" then
  r = { sent_to = n:broadcast("say", a1) }
elseif op == "put" then
  r, err = n:request(target, "put", { key = a1, value = comm.json.decode(a2) or a2 }, { timeout = 2 })
elseif op == "get" then
  r, err = n:request(target, "get", { key = a1 }, { timeout = 2 })
else
  r, err = n:request(target, op, nil, { timeout = 2 })
end
n:stop()
if not r then
  io.stderr:write("error: ", tostring(err), "\n")
  os.exit(1)
end
print(comm.json.encode(r))
