-- tools/demo_http.lua: `make demo-http` — the JSON API of examples/http in
-- front of the cluster example, driven with curl, as a transcript. From the
-- repository root:
--
--   lua5.4 tools/demo_http.lua        (DEMO_HOLD=S keeps it all up S seconds
--                                      so a browser can open /peers)
--
-- It starts three `examples/cluster/node.lua` processes and the gateway,
-- then: PUT and GET keys, a missing key (404), a body that is not JSON
-- (400), /info, /health, /metrics through promtool, and /peers as an HTML
-- table (also written to build/demo-http/peers.html); SIGTERM for all.
-- Exits 1 if any check failed.
package.path = "scripts/?.lua;scripts/?/init.lua;spec/?.lua;tools/?.lua;" .. package.path
local build_dir = (os.getenv("LUACOMM_BIN") or "build/luacomm"):match("^(.*)/[^/]*$") or "build"
package.cpath = build_dir .. "/lib/?.so;" .. package.cpath

local comm = require "luacomm"
local helpers = require "helpers"

local failed = 0

local function check(ok, what)
  print((ok and "  ok   " or "  FAIL ") .. what)
  if not ok then failed = failed + 1 end
  return ok
end

-- Runs curl, shows the command and the answer; returns body, status.
local function curl(args)
  local cmd = "env -u LD_PRELOAD curl -s -S -m 5 -w '\\n%{http_code}' " .. args
  print("$ " .. cmd:gsub("^env %-u LD_PRELOAD ", ""):gsub(" %-w '\\n%%{http_code}'", ""):gsub("%-s %-S %-m 5 ", ""))
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  local body, status = out:match("^(.-)\n?(%d%d%d)$")
  body = body or out
  print((body:gsub("\n$", ""):gsub("[^\n]+", "  %0")) .. "  [" .. tostring(status) .. "]")
  return body, tonumber(status)
end

local names = { "a", "b", "c" }
local addr, procs = {}, {}
for _, n in ipairs(names) do addr[n] = "127.0.0.1:" .. helpers.free_port() end
local http_addr = "127.0.0.1:" .. helpers.free_port()
local base = "http://" .. http_addr

local ok, err = pcall(function()
  print("== three cluster nodes and the gateway")
  for _, n in ipairs(names) do
    local args = { "examples/cluster/node.lua", n, addr[n] }
    for _, m in ipairs(names) do if m ~= n then args[#args + 1] = addr[m] end end
    procs[#procs + 1] = helpers.spawn_host(args)
    print(("  node %s on %s"):format(n, addr[n]))
  end
  local gw = helpers.spawn_host{ "examples/http/gateway.lua", http_addr, addr.a, addr.b, addr.c }
  procs[#procs + 1] = gw
  assert(gw:wait_output("gateway on", "out", 10), "gateway did not start: " .. gw:stderr())
  -- ready once the gateway sees every node up
  assert(helpers.wait_until(function()
    local p = io.popen("env -u LD_PRELOAD curl -s -m 2 " .. base .. "/peers")
    local s = p:read("a")
    p:close()
    local t = comm.json.decode(s)
    return type(t) == "table" and t.a and t.a.state == "up" and t.b and t.b.state == "up" and t.c and t.c.state == "up"
  end, 10), "the gateway did not see every node up")

  print("\n== keys")
  local body, status = curl("-X PUT -d '\"blue\"' " .. base .. "/kv/colour")
  local put = comm.json.decode(body) or {}
  check(status == 200 and put.replicas == 3, "PUT /kv/colour stored on " .. tostring(put.node) .. ", replicated to 3")
  body, status = curl(base .. "/kv/colour")
  check(status == 200 and (comm.json.decode(body) or {}).value == "blue", "GET /kv/colour is \"blue\"")
  status = select(2, curl("-X PUT -H 'Content-Type: application/json' -d '{\"n\":[1,2,3]}' " .. base .. "/kv/list"))
  check(status == 200, "PUT /kv/list with a JSON object")
  status = select(2, curl(base .. "/kv/missing"))
  check(status == 404, "GET /kv/missing is 404")
  body, status = curl("-X PUT -d 'not json' " .. base .. "/kv/bad")
  check(status == 400 and body:find("not JSON", 1, true) ~= nil, "PUT of a body that is not JSON is 400")

  print("\n== the cluster")
  body, status = curl(base .. "/info")
  local info = comm.json.decode(body) or {}
  check(status == 200 and info.a and info.b and info.c and info.a.keys == 2, "GET /info: every node has both keys")
  body, status = curl(base .. "/health")
  check(status == 200 and body == "ok\n", "GET /health is ok")
  status = select(2, curl(base .. "/metrics -o build/demo-http/metrics.txt --create-dirs"))
  local p = io.popen("env -u LD_PRELOAD promtool check metrics < build/demo-http/metrics.txt 2>&1; echo rc=$?")
  local verdict = p:read("a")
  p:close()
  check(status == 200 and verdict == "rc=0\n", "GET /metrics passes promtool check metrics")

  print("\n== /peers for a browser (" .. base .. "/peers)")
  body, status = curl("-H 'Accept: text/html' " .. base .. "/peers")
  helpers.writefile("build/demo-http/peers.html", body)
  check(status == 200 and body:find("<table", 1, true) ~= nil, "an HTML table, also in build/demo-http/peers.html")

  local hold = tonumber(os.getenv("DEMO_HOLD") or "")
  if hold then
    print(("\n(up for %g s: open %s/peers in a browser)"):format(hold, base))
    os.execute("sleep " .. hold)
  end
end)
if not ok then check(false, tostring(err)) end

print("\n== SIGTERM every process")
for _, p in ipairs(procs) do p:signal("TERM") end
for _, p in ipairs(procs) do
  local st = helpers.wait_until(function() return p:status() end, 10)
  if st ~= 0 then p:kill() end
  check(st == 0, "exited 0")
end

print(failed == 0 and "\ndemo-http passed" or ("\ndemo-http FAILED: %d check(s)"):format(failed))
os.exit(failed == 0 and 0 or 1)
