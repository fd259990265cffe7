-- Failure detection between real processes: a node killed with SIGKILL is
-- reported down by its peers within timeout + heartbeat, and up again when
-- it comes back; a node frozen with SIGSTOP (its sockets stay open, so only
-- the silence gives it away) likewise.
local comm = require "luacomm"
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"

local HEARTBEAT, TIMEOUT = 0.1, 0.5

describe("node failure detection", function()
  local cl

  setup(function()
    cl = cluster.start({
      { name = "a", peers = { "b", "c" } },
      { name = "b", peers = { "c" } },
      { name = "c" },
    }, { heartbeat = HEARTBEAT, timeout = TIMEOUT, reconnect = { min = 0.05, max = 0.2 } })
    for _, pair in ipairs{ { "a", "b" }, { "a", "c" }, { "b", "c" } } do
      assert(cl:wait_line(pair[1], "up " .. pair[2]))
      assert(cl:wait_line(pair[2], "up " .. pair[1]))
    end
  end)

  teardown(function() cl:stop_clean() end)

  -- Seconds from now until both watchers have printed one more `line`.
  local function time_until(watchers, line)
    local want = {}
    for _, w in ipairs(watchers) do want[w] = cl:count(w, line) + 1 end
    local t0 = comm.now()
    return function()
      local ok = helpers.wait_until(function()
        for w, n in pairs(want) do
          if cl:count(w, line) < n then return false end
        end
        return true
      end, 10, 0.005)
      assert(ok, line .. " never reported")
      return comm.now() - t0
    end
  end

  it("reports a SIGKILLed node down within timeout + heartbeat, and up when it returns", function()
    helpers.run(function()
      local down = time_until({ "a", "b" }, "down c")
      cl:signal("c", "KILL")
      local took = down()
      assert.is_true(took < TIMEOUT + HEARTBEAT, ("detected after %.3f s"):format(took))
      local up = time_until({ "a", "b" }, "up c")
      cl:restart("c")
      up()
      -- the restarted c is linked both ways and answers
      assert(cl:wait_line("c", "up a"))
      assert(cl:wait_line("c", "up b"))
      local t = cl:client("t1", { "c" })
      assert.are.equal("back", t:request("c", "echo", "back"))
      assert.are.equal("via c", t:request("a", "echo", "via c"))
      t:stop()
    end)
  end)

  it("reports a frozen node down by its silence alone, and up when it thaws", function()
    helpers.run(function()
      local down = time_until({ "a", "c" }, "down b")
      cl:signal("b", "STOP")
      local took = down()
      -- silence is detected after `timeout`; the scheduling slack is small
      assert.is_true(took >= TIMEOUT - HEARTBEAT - 0.02, ("too early: %.3f s"):format(took))
      assert.is_true(took < TIMEOUT + HEARTBEAT + 0.1, ("detected after %.3f s"):format(took))
      local up = time_until({ "a", "c" }, "up b")
      cl:signal("b", "CONT")
      up()
      assert.is_nil(cl.procs.b:status())
    end)
  end)
end)

describe("a node that only dials", function()
  it("keeps dialling a peer that is not there yet, and links when it comes", function()
    local port = helpers.free_port()
    local addr = "127.0.0.1:" .. port
    local dialler = helpers.spawn_host({ "spec/fixtures/node/node.lua", comm.json.encode{
      name = "early", peers = { addr }, heartbeat = 0.1, timeout = 0.5, reconnect = { min = 0.05, max = 0.1 } } })
    local late
    finally(function()
      dialler:kill()
      if late then late:kill() end
    end)
    helpers.run(function()
      assert(dialler:wait_output("ready", "out", 5))
      comm.sleep(0.5) -- several refused dials
      assert.is_nil(dialler:status(), "the dialler gave up and exited: " .. dialler:stderr())
      late = helpers.spawn_host({ "spec/fixtures/node/node.lua", comm.json.encode{
        name = "late", listen = addr, heartbeat = 0.1, timeout = 0.5 } })
      assert(dialler:wait_output("up late", "out", 5), dialler:stderr())
      assert(late:wait_output("up early", "out", 5))
    end)
    helpers.assert_no_error_log(dialler:stderr())
  end)
end)
