-- Every userdata type of luacomm.core has the same metatable shape
-- (bindings/object.c): methods through __index, __close, __gc, __tostring.
local comm = require "luacomm"
local core = require "luacomm.core"
local helpers = require "helpers"

describe("core objects", function()
  it("all have __index, __close, __gc and __tostring", function()
    helpers.run(function()
      local c, s, l = helpers.pair()
      local u = assert(comm.udp())
      local objs = {
        task = comm.spawn(function() end), timer = comm.after(10, function() end),
        cond = core.cond(), conn = c, listener = l, udp = u,
      }
      for name, o in pairs(objs) do
        local mt = getmetatable(o)
        for _, m in ipairs{ "__index", "__close", "__gc", "__tostring" } do
          assert.is_not_nil(mt[m], name .. " has no " .. m)
        end
        assert.matches("^luacomm%." .. name .. " %(", tostring(o))
      end
      assert.matches("%(fd %d+%)$", tostring(u))
      objs.timer:cancel()
      helpers.close_all(c, s, l, u)
      assert.are.equal("luacomm.udp (closed)", tostring(u))
    end)
  end)

  it("a to-be-closed task or timer is cancelled at the end of its block", function()
    helpers.run(function()
      local ran, t, tm = false
      do
        local task <close> = comm.spawn(function() comm.sleep(0.05); ran = true end)
        local timer <close> = comm.after(0.05, function() ran = true end)
        t, tm = task, timer
      end
      assert.are.equal("cancelled", t:status())
      assert.is_false(tm:active())
      comm.sleep(0.1)
      assert.is_false(ran)
    end)
  end)

  it("a to-be-closed cond wakes its waiters at the end of its block", function()
    helpers.run(function()
      local waiter
      do
        local cv <close> = core.cond()
        waiter = comm.spawn(function() return cv:wait(5) end)
        comm.yield()
      end
      assert.are.same({ true, true }, { waiter:join(5) })
    end)
  end)

  it("a listener or socket the core closed answers nil, \"closed\"; one you closed raises", function()
    helpers.run(function()
      local l = helpers.listen()
      local u = assert(comm.udp())
      core.shutdown("all")
      assert.are.same({ nil, "closed" }, { l:accept(0) })
      assert.are.same({ nil, "closed" }, { l:addr() })
      assert.are.same({ nil, "closed" }, { u:recvfrom(0) })
      assert.are.same({ nil, "closed" }, { u:sendto("x", "127.0.0.1:9") })
      l:close()
      u:close()
      assert.has_error(function() l:accept(0) end, "attempt to use a closed listener")
      assert.has_error(function() u:addr() end, "attempt to use a closed socket")
    end)
  end)
end)
