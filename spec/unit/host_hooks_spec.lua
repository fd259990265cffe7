-- The seam between a host and the library: core.set_host is the one place
-- a host plugs in (comm.stop, comm.stopping, comm.reload and signals go
-- through it), and core.drained is how a stop waits for connections.
local comm = require "luacomm"
local core = require "luacomm.core"
local helpers = require "helpers"

describe("core.set_host", function()
  after_each(function() core.set_host{} end)

  it("routes comm.stop, comm.stopping and comm.reload to the host's hooks", function()
    local calls = {}
    core.set_host{
      stop = function(status) calls[#calls + 1] = "stop " .. tostring(status) end,
      stopping = function() return true end,
      reload = function() return false, "from the hook" end,
    }
    comm.stop(3)
    assert.are.same({ "stop 3" }, calls)
    assert.is_true(comm.stopping())
    assert.are.same({ false, "from the hook" }, { comm.reload() })
  end)

  it("without hooks: stock behaviour", function()
    assert.is_false(comm.stopping())
    assert.are.same({ false, "reload needs the luacomm host" }, { comm.reload() })
    assert.is_nil(core.host("stop"))
  end)

  it("replaces the hooks as a whole", function()
    core.set_host{ stopping = function() return true end }
    core.set_host{ reload = function() return true end }
    assert.is_false(comm.stopping())
    assert.is_true(comm.reload())
  end)

  it("rejects an unknown hook, a non-function and a non-table", function()
    assert.has_error(function() core.set_host{ sigal = function() end } end,
                     "bad argument #1 to 'set_host' (unknown hook 'sigal')")
    assert.has_error(function() core.set_host{ stop = true } end)
    assert.has_error(function() core.set_host{ [1] = print } end)
    assert.has_error(function() core.set_host() end)
    assert.has_error(function() core.host("nope") end)
    assert.is_false(comm.stopping()) -- nothing half-installed
  end)
end)

describe("core.drained", function()
  it("waits until a closed connection has flushed, woken by the core", function()
    helpers.run(function()
      local c, s, l = helpers.pair({ hwm = 1 })
      local big = string.rep("x", 4 * 1024 * 1024)
      s:write(big)
      s:close()                                   -- the kernel cannot take 4 MiB at once
      assert.is_true(core.stats().lingering >= 1, "nothing lingers: the spec would prove nothing")
      assert.are.same({ nil, "timeout" }, { core.drained("lingering", 0.05) })
      local reader = comm.spawn(function() return c:read(#big, 10) end)
      assert.is_true(core.drained("lingering", 10))
      assert.are.equal(0, core.stats().lingering)
      local _, got = reader:join(10)
      assert.are.equal(#big, #got)
      assert.is_true(core.drained("lingering")) -- nothing left: at once
      c:close()
      l:close()
      assert.is_true(core.drained("conns", 10))
    end)
  end)

  it("rejects what it cannot wait for, and a bad timeout", function()
    helpers.run(function()
      assert.has_error(function() core.drained("timers") end)
      assert.has_error(function() core.drained("conns", -1) end)
    end)
  end)

  it("answers at once, even outside a task, when nothing is left", function()
    assert.are.equal(0, core.stats().conns)
    assert.is_true(core.drained("conns", 1))
  end)
end)
