-- luacomm.testing, the installed test kit: processes with a readiness line
-- and captured output, cleanup that always happens, a cluster harness.
local testing = require "luacomm.testing"
local helpers = require "helpers"

-- A node script for the cluster: luacomm NODE.lua NAME LISTEN [PEER...]
local NODE = [[
local comm = require "luacomm"
local node = require "luacomm.node"
local M = {}
function M.start(state, name, listen, ...)
  local n = node.new{ name = name, listen = listen, peers = { ... }, heartbeat = 0.1, timeout = 0.5,
                      reconnect = { min = 0.05, max = 0.2 } }
  n:on_peer(function(peer, what) print(what .. " " .. peer) end)
  assert(n:start())
  state.n = n
  print("ready " .. name)
end
function M.stop(state) state.n:stop() end
return M
]]

local function alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

describe("luacomm.testing", function()
  testing.bin = helpers.BIN

  it("starts a script, waits for its readiness line, captures both outputs, stops it", function()
    local dir = testing.tmpdir()
    local path = testing.writefile(dir .. "/s.lua", [[
local comm = require "luacomm"
comm.log.info("on stderr")
local l = assert(comm.listen("127.0.0.1:0"))
print("listening " .. select(2, l:addr()), ...)
]])
    local p <close> = testing.start{ script = path, args = { "x", 7 }, ready = "listening (%d+)" }
    local port = tonumber(p:find("listening (%d+)", "out"))
    assert.is_truthy(port)
    assert.are.equal("listening " .. port .. "\tx\t7\n", p:stdout())
    assert.truthy(p:stderr():find("[info] on stderr", 1, true))
    assert.is_nil(p:status())
    assert.are.equal(0, p:stop())
  end)

  it("raises with what the process wrote when it exits before it is ready", function()
    local ok, err = pcall(testing.start, { code = 'io.stderr:write("no config\\n") os.exit(3)', ready = "ready" })
    assert.is_false(ok)
    assert.truthy(err:find("exited with status 3", 1, true), err)
    assert.truthy(err:find("no config", 1, true), err)
  end)

  it("kills what is left: on cleanup(), and when the Lua that started it exits", function()
    local p = testing.start{ code = 'require("luacomm").every(1, function() end) print("up")', ready = "up" }
    testing.cleanup()
    assert.is_truthy(p:status())
    -- a separate Lua that starts a process and exits without a word about it
    local status, out = helpers.run_lua(([[
      local testing = require "luacomm.testing"
      testing.bin = %q
      local p = testing.start{ code = 'require("luacomm").every(1, function() end) print("up")', ready = "up" }
      print(p.pid)
    ]]):format(helpers.BIN))
    assert.are.equal(0, status)
    local pid = assert(tonumber(out:match("(%d+)")))
    assert(testing.wait_until(function() return not alive(pid) end, 5), "process " .. pid .. " outlived its test")
  end)

  it("runs a cluster: all nodes up, one killed and restarted", function()
    local dir = testing.tmpdir()
    local script = testing.writefile(dir .. "/node.lua", NODE)
    local names = { "a", "b", "c" }
    local cl <close> = testing.cluster{
      script = script, nodes = names, ready = "ready", ready_in = "out",
      args = function(name, c)
        local args = { name, c.addr[name] }
        for _, other in ipairs(names) do
          if other < name then args[#args + 1] = c.addr[other] end -- each pair dialled once
        end
        return args
      end,
    }
    local function says(name, line) return cl:proc(name):wait_output("\n?" .. line .. "\n", "out", 10) end
    for _, n in ipairs(names) do
      for _, m in ipairs(names) do
        if n ~= m then assert.truthy(says(n, "up " .. m), n .. " never saw " .. m .. " up") end
      end
    end
    cl:kill("c")
    assert.truthy(says("a", "down c"))
    assert.truthy(says("b", "down c"))
    local c = cl:restart("c")
    assert.truthy(c:find("ready c", "out"))
    -- a's stdout goes on: it now says "up c" a second time
    assert(testing.wait_until(function()
      local _, ups = cl:proc("a"):stdout():gsub("up c\n", "")
      return ups == 2
    end, 10), cl:proc("a"):stdout())
    cl:stop()
    for _, n in ipairs(names) do assert.is_truthy(cl:proc(n):status()) end
  end)
end)
