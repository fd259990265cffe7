-- luacomm.testing.proxy, the fault-injecting proxy the node fault specs stand
-- on: it must forward faithfully, and do exactly what its rules say.
local comm = require "luacomm"
local helpers = require "helpers"
local proxy = require "luacomm.testing.proxy"

-- An upstream that answers each frame with "re:" .. frame.
local function upstream()
  local l, addr = helpers.listen()
  comm.spawn(function()
    while true do
      local c = l:accept()
      if not c then return end
      comm.spawn(function()
        while true do
          local f = c:recv()
          if not f then return c:close() end
          c:send("re:" .. f)
        end
      end)
    end
  end)
  return l, addr
end

local function through(rules)
  local l, up = upstream()
  local p = proxy.new{ upstream = up }
  for _, r in ipairs(rules or {}) do p:rule(r) end
  local c = assert(comm.connect(assert(p:start())))
  return c, p, l
end

local function done(c, p, l)
  c:close(); p:stop(); l:close()
end

describe("proxy tool", function()
  it("forwards frames both ways, in order", function()
    helpers.run(function()
      local c, p, l = through()
      for i = 1, 50 do c:send("f" .. i) end
      for i = 1, 50 do assert.are.equal("re:f" .. i, c:recv(2)) end
      local s = p:stats()
      assert.are.equal(50, s.frames_up)
      assert.are.equal(50, s.frames_down)
      done(c, p, l)
    end)
  end)

  it("drops the first N frames matching JSON fields, then lets them by", function()
    helpers.run(function()
      local c, p, l = through()
      local r = p:rule{ dir = "up", match = { kind = "req", type = "work" }, action = "drop", count = 1 }
      local work = comm.json.encode{ kind = "req", type = "work" }
      c:send(work)
      c:send(comm.json.encode{ kind = "req", type = "other" })
      assert.are.equal("re:" .. comm.json.encode{ kind = "req", type = "other" }, c:recv(2))
      c:send(work)
      assert.are.equal("re:" .. work, c:recv(2))
      assert.are.equal(1, r.hits)
      assert.are.equal(1, p:stats().dropped)
      done(c, p, l)
    end)
  end)

  it("matches by predicate, per direction", function()
    helpers.run(function()
      local c, p, l = through()
      -- drop replies to the 2nd and 3rd frames only
      p:rule{ dir = "down", match = function(_, _, info) return info.n == 2 or info.n == 3 end, action = "drop" }
      for i = 1, 4 do c:send("x" .. i) end
      assert.are.equal("re:x1", c:recv(2))
      assert.are.equal("re:x4", c:recv(2))
      local _, err = c:recv(0.1)
      assert.are.equal("timeout", err)
      done(c, p, l)
    end)
  end)

  it("delays and corrupts", function()
    helpers.run(function()
      local c, p, l = through{
        { dir = "up", match = { n = 1 }, action = "delay", delay = 0.3, count = 1 },
        { dir = "up", match = { n = 2 }, action = "corrupt" },
      }
      local t0 = comm.now()
      c:send('{"n":1}')
      assert.are.equal('re:{"n":1}', c:recv(2))
      assert.is_true(comm.now() - t0 >= 0.29)
      c:send('{"n":2}')
      assert.are.equal('re:\255"n":2}', c:recv(2))
      c:send("plain")
      assert.are.equal("re:plain", c:recv(2))
      done(c, p, l)
    end)
  end)

  it("cuts the connection on a close rule and on cut()", function()
    helpers.run(function()
      local c, p, l = through{ { dir = "up", match = { bye = true }, action = "close" } }
      c:send("a")
      assert.are.equal("re:a", c:recv(2))
      c:send('{"bye":true}')
      local _, err = c:recv(2)
      assert.are.equal("closed", err)
      c:close()
      local c2 = assert(comm.connect(p.addr))
      c2:send("b")
      assert.are.equal("re:b", c2:recv(2))
      p:cut()
      local _, err2 = c2:recv(2)
      assert.are.equal("closed", err2)
      done(c2, p, l)
    end)
  end)

  it("parses command-line rules", function()
    assert.are.same({ action = "drop", dir = "down", count = 1, match = { kind = "rep", type = "work" } },
                    proxy.parse_rule("drop:down:rep:work*1"))
    assert.are.same({ action = "delay", dir = "up", delay = 0.5, match = { kind = "req" } },
                    proxy.parse_rule("delay:up:req@0.5"))
    assert.are.same({ action = "close", dir = "both" }, proxy.parse_rule("close:both"))
  end)
end)
