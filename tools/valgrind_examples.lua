-- Runs the examples under valgrind (memcheck, full leak check) with real
-- traffic and signals, and fails unless valgrind finds nothing.
--   lua5.4 tools/valgrind_examples.lua        (from the repo root; `make valgrind`)
package.path = "scripts/?.lua;spec/?.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath
local comm = require "luacomm"
local helpers = require "helpers"

local VALGRIND = { "valgrind", "--error-exitcode=99", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                   "--errors-for-leak-kinds=definite,indirect", "--track-fds=no" }

local function under_valgrind(args)
  local argv = {}
  for _, a in ipairs(VALGRIND) do argv[#argv + 1] = a end
  argv[#argv + 1] = "build/luacomm"
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return helpers.spawn_host(nil, { argv = argv })
end

local http = require "luacomm.http"

local function connect(port)
  return helpers.wait_until(function() return (comm.connect("127.0.0.1:" .. port)) end, 30, 0.1)
end

local function exchange(c, frames)
  for _, f in ipairs(frames) do
    assert(c:send(f))
    local got = assert(c:recv(30))
    assert(#got >= #f, "short answer")
  end
end

local cases = {
  ["examples/echo.lua"] = function()
    local port = helpers.free_port()
    local p = under_valgrind({ "examples/echo.lua", tostring(port) })
    local c = assert(connect(port), "echo did not start")
    exchange(c, { "", "x", ("y"):rep(65536), ("z"):rep(1 << 20) })
    c:write("\0\0\1\0partial")           -- a truncated frame, then the peer goes away
    c:close()
    return p
  end,
  ["examples/reload/service.lua + SIGHUP"] = function()
    local dir = helpers.tmpdir()
    assert(os.execute("cp examples/reload/*.lua " .. dir))
    local port = helpers.free_port()
    local p = under_valgrind({ dir .. "/service.lua", tostring(port) })
    local c = assert(connect(port), "service did not start")
    exchange(c, { "a" })
    helpers.writefile(dir .. "/greeting.lua", "return { word = function() return 'hi' end }\n")
    p:signal("HUP")
    assert(p:wait_output("reload ok", "err", 30))
    helpers.writefile(dir .. "/greeting.lua", "return {\n")
    p:signal("HUP")
    assert(p:wait_output("reload failed", "err", 30))
    exchange(c, { "b" })
    return p
  end,
  ["examples/cluster/node.lua (two nodes, a routed request, SIGHUP)"] = function()
    local pa, pb = helpers.free_port(), helpers.free_port()
    local a = under_valgrind({ "examples/cluster/node.lua", "a", "127.0.0.1:" .. pa, "127.0.0.1:" .. pb })
    local plain = helpers.spawn_host({ "examples/cluster/node.lua", "b", "127.0.0.1:" .. pb, "127.0.0.1:" .. pa })
    assert(a:wait_output("peer b up", "out", 60), "a never saw b") -- the example prints its events
    local function client(...)
      local st, out, err = helpers.run_host({ "examples/cluster/client.lua", "127.0.0.1:" .. pa, ... })
      assert(st == 0, "client failed: " .. out .. err)
      return out
    end
    client("a", "put", "colour", '"blue"')
    assert(client("b", "get", "colour"):match("blue"), "b did not get the key")
    a:signal("HUP")
    assert(a:wait_output("reload ok", "err", 30))
    plain:signal("TERM")
    plain:wait(10)
    return a
  end,
  ["examples/http/gateway.lua (HTTP in, n:request, /metrics, garbage, --metrics)"] = function()
    local pn, ph, pm = helpers.free_port(), helpers.free_port(), helpers.free_port()
    local plain = helpers.spawn_host({ "examples/cluster/node.lua", "a", "127.0.0.1:" .. pn })
    local g = under_valgrind({ "--metrics", "127.0.0.1:" .. pm, "examples/http/gateway.lua", "127.0.0.1:" .. ph,
                               "127.0.0.1:" .. pn })
    local base = "http://127.0.0.1:" .. ph
    assert(helpers.wait_until(function()
      local r = http.request{ url = base .. "/peers", timeout = 5 }
      return r and r.body:find('"up"', 1, true)
    end, 60, 0.2), "the gateway never saw node a")
    local function status(o) return assert(http.request(o)).status end
    assert(status{ method = "PUT", url = base .. "/kv/k", body = '"v"', timeout = 30 } == 200)
    assert(assert(http.request{ url = base .. "/kv/k", timeout = 30 }).body:find('"v"', 1, true))
    assert(status{ url = base .. "/kv/missing", timeout = 30 } == 404)
    assert(status{ url = base .. "/peers?format=html", timeout = 30 } == 200)
    assert(status{ url = "http://127.0.0.1:" .. pm .. "/metrics", timeout = 30 } == 200)
    local c = assert(connect(ph))
    c:write("\1\2 not http\r\n\r\n")
    c:read(1, 30)
    c:close()
    c = assert(connect(ph))
    c:write("GET /kv/k HTTP/1.1\r\nHost: x\r\n") -- and gone mid-request
    c:close()
    plain:signal("TERM")
    plain:wait(10)
    return g
  end,
}

local passed, failed = 0, 0
comm.run(function()
  for name, run in pairs(cases) do
    local ok, p = pcall(run)
    local status
    if ok then
      comm.sleep(0.2)
      p:signal("TERM")
      status = p:wait(60)
    end
    local report = ok and p:stderr() or ""
    if ok and status == 0 and report:match("ERROR SUMMARY: 0 errors") then
      passed = passed + 1
      print("ok     " .. name)
    else
      failed = failed + 1
      print("FAILED " .. name .. ": " .. (ok and ("exit " .. tostring(status)) or tostring(p)))
      print(report:match("==%d+== HEAP SUMMARY.*") or report)
    end
    if ok then p:kill() end
  end
end)
print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
