-- Host names in comm.connect are looked up without stopping the loop
-- (evdns): /etc/hosts answers at once; a nameserver — here one the spec
-- runs itself on loopback, named by LUACOMM_RESOLV_CONF — is asked while
-- every other task keeps running.
local comm = require "luacomm"
local helpers = require "helpers"

local function lookup(mode)
  local port = helpers.free_port()
  local dir = helpers.tmpdir()
  local conf = helpers.writefile(dir .. "/resolv.conf", ("nameserver 127.0.0.1:%d\noptions timeout:5 attempts:1\n"):format(port))
  local st, out, err = helpers.run_host({}, {
    argv = { "lua5.4", "spec/fixtures/dns/lookup.lua", mode, tostring(port) },
    env = { "LUACOMM_RESOLV_CONF=" .. conf, "LUA_PATH=" .. helpers.shquote(package.path),
            "LUA_CPATH=" .. helpers.shquote(package.cpath) },
  })
  assert.are.equal(0, st, err)
  local facts = {}
  for k, v in out:gmatch("(%S+)\t([^\n]*)") do facts[k] = v end
  return facts
end

describe("name lookup", function()
  it("resolves localhost from /etc/hosts", function()
    helpers.run(function()
      local l, _, port = helpers.listen()
      local c = assert(comm.connect("localhost:" .. port, { timeout = 2 }))
      local s = assert(l:accept(2))
      assert(c:send("hi"))
      assert.are.equal("hi", s:recv(2))
      c:close(); s:close(); l:close()
    end)
  end)

  it("asks the nameserver and connects to the address it gives", function()
    local f = lookup("answer")
    assert.are.equal("connected", f.result)
    assert.are.equal("over a looked-up name", f.frame)
    assert.is_true(tonumber(f.queries) >= 1)
  end)

  it("says \"unknown host\" when the nameserver knows no such name", function()
    local f = lookup("nxdomain")
    assert.are.equal("unknown host", f.result)
  end)

  it("keeps every other task running while a nameserver does not answer, then times out", function()
    local f = lookup("silent")
    assert.are.equal("timeout", f.result)
    assert.is_true(tonumber(f.queries) >= 1, "the nameserver was asked")
    -- a 10 ms ticker ran all through the 0.5 s lookup: the loop never stopped
    assert.is_true(tonumber(f.ticks) >= 25, "ticks: " .. f.ticks)
  end)

  it("udp sendto looks a name up without blocking, once, then from its cache", function()
    local f = lookup("udp")
    assert.are.equal("true", f.send1)
    assert.are.equal("one", f.recv1)
    assert.are.equal("true", f.send2)
    assert.are.equal("two", f.recv2)
    assert.is_true(tonumber(f.queries) >= 1, "the nameserver was asked")
    assert.are.equal("true", f.cached)
    assert.are.equal("unknown host", f.unknown)
  end)
end)
