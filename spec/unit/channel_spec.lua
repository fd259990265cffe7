-- CONTRACT §2: comm.channel([capacity]) — put/get order, timeouts,
-- capacity back-pressure, close. Run on the real module and on the
-- simulated one (spec/backends.lua).
local backends = require "backends"

for _, b in ipairs(backends) do
describe("channel on " .. b.name, function()
  it("gets items in the order they were put", function()
    b.run(function(comm)
      local ch = comm.channel()
      for i = 1, 100 do assert.is_true(ch:put(i)) end
      assert.are.equal(100, #ch)
      for i = 1, 100 do assert.are.equal(i, ch:get()) end
      assert.are.equal(0, #ch)
    end)
  end)

  it("carries any value, false included", function()
    b.run(function(comm)
      local ch = comm.channel()
      local t = {}
      ch:put(false); ch:put("s"); ch:put(t); ch:put(0)
      assert.are.same({ false, "s", t, 0 }, { ch:get(), ch:get(), ch:get(), ch:get() })
    end)
  end)

  it("get waits for a put from another task", function()
    b.run(function(comm)
      local ch = comm.channel()
      comm.spawn(function() comm.sleep(0.01); ch:put("later") end)
      local t0 = comm.now()
      assert.are.equal("later", ch:get(5))
      assert.is_true(comm.now() - t0 >= 0.01)
    end)
  end)

  it("get with a timeout gives nil, \"timeout\" no earlier than asked", function()
    b.run(function(comm)
      local ch = comm.channel()
      local t0 = comm.now()
      assert.are.same({ nil, "timeout" }, { ch:get(0.03) })
      assert.is_true(comm.now() - t0 >= 0.03)
      assert.are.same({ nil, "timeout" }, { ch:get(0) })
      -- still usable after a timeout
      ch:put(1)
      assert.are.equal(1, ch:get(0))
    end)
  end)

  it("several getters are served one item each, in the order they came", function()
    b.run(function(comm)
      local ch = comm.channel()
      local order = {}
      local getters = {}
      for i = 1, 3 do
        getters[i] = comm.spawn(function()
          local v = ch:get(5)
          order[#order + 1] = i .. "=" .. v
        end)
      end
      comm.yield()
      ch:put("a"); ch:put("b"); ch:put("c")
      for i = 1, 3 do assert.is_true(getters[i]:join(5)) end
      assert.are.same({ "1=a", "2=b", "3=c" }, order)
    end)
  end)

  it("with a capacity, put blocks while full until a get makes room", function()
    b.run(function(comm)
      local ch = comm.channel(2)
      local progress = 0
      local producer = comm.spawn(function()
        for i = 1, 5 do
          ch:put(i)
          progress = i
        end
      end)
      comm.sleep(0.01)
      assert.are.equal(2, progress) -- the third put waits
      assert.are.equal("waiting", producer:status())
      assert.are.equal(1, ch:get())
      comm.sleep(0.01)
      assert.are.equal(3, progress) -- exactly one more went in
      local got = { 2 }
      assert.are.equal(2, ch:get())
      for _ = 3, 5 do got[#got + 1] = ch:get(5) end
      assert.are.same({ 2, 3, 4, 5 }, got)
      assert.is_true(producer:join(5))
    end)
  end)

  it("close: get returns what is left, then nil, \"closed\"", function()
    b.run(function(comm)
      local ch = comm.channel()
      ch:put("x"); ch:put("y")
      ch:close()
      assert.are.equal("x", ch:get())
      assert.are.equal("y", ch:get(1))
      assert.are.same({ nil, "closed" }, { ch:get() })
      assert.are.same({ nil, "closed" }, { ch:get(1) })
      ch:close() -- idempotent
    end)
  end)

  it("close wakes a waiting get with nil, \"closed\"", function()
    b.run(function(comm)
      local ch = comm.channel()
      local getter = comm.spawn(function() return ch:get() end)
      comm.yield()
      ch:close()
      assert.are.same({ true, nil, "closed" }, { getter:join(5) })
    end)
  end)

  it("put after close gives nil, \"closed\", and close wakes a blocked put", function()
    b.run(function(comm)
      local ch = comm.channel(1)
      ch:put(1)
      local putter = comm.spawn(function() return ch:put(2) end)
      comm.yield()
      assert.are.equal("waiting", putter:status())
      ch:close()
      assert.are.same({ true, nil, "closed" }, { putter:join(5) })
      assert.are.same({ nil, "closed" }, { ch:put(3) })
      assert.are.equal(1, ch:get())
      assert.are.same({ nil, "closed" }, { ch:get() })
    end)
  end)

  it("rejects a capacity that is not a positive integer", function()
    local comm = b.module()
    assert.has_error(function() comm.channel(0) end, "bad argument #1 to 'channel' (positive integer expected)")
    assert.has_error(function() comm.channel(1.5) end, "bad argument #1 to 'channel' (positive integer expected)")
    assert.has_error(function() comm.channel("2") end, "bad argument #1 to 'channel' (positive integer expected)")
  end)

  it("a blocking get outside a task raises", function()
    local ch = b.module().channel()
    local ok, err = pcall(ch.get, ch)
    assert.is_false(ok)
    assert.matches("outside a task", err)
  end)
end)
end
