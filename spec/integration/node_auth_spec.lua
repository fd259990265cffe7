-- Authenticated nodes (CONTRACT §8): real node processes "a" - "b" - "c"
-- sharing a secret, and peers that hold another secret, none, or replay
-- what they recorded. Only nodes that prove the secret ever link; nothing
-- from the others reaches a handler or the routing table; every failure is
-- counted by the node that refused it; good clients are served throughout.
local comm = require "luacomm"
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"
local node = require "luacomm.node"
local envelope = require "luacomm.node.envelope"
local auth = require "luacomm.node.auth"

local json = comm.json
local SECRET = "correct horse battery staple"

describe("authenticated nodes", function()
  local cl

  setup(function()
    cl = cluster.start({ { name = "a", peers = { "b" } }, { name = "b", peers = { "c" } }, { name = "c" } },
                       { heartbeat = 0.2, timeout = 2, handshake_timeout = 0.5, secret = SECRET },
                       { { "a", "up b" }, { "c", "up b" } })
  end)

  teardown(function() cl:stop_clean() end)

  local function with_client(fn) cl:with_client({ "a" }, fn, { secret = SECRET }) end
  local function stats(t, name) return assert(t:request(name, "stats")).node end

  local expect = cluster.expect

  local function raw() return assert(comm.connect(cl.addr.a)) end

  it("links nodes that share the secret, and routes requests across them", function()
    with_client(function(t)
      assert.are.equal("hi", t:request("c", "echo", "hi", { timeout = 2, retries = 3 }))
      assert.are.equal(0, stats(t, "a").auth_failures)
      assert.are.equal(0, t:stats().auth_failures)
      assert.is_table(t:routes().c)
    end)
  end)

  it("takes the secret from a file, trailing newline and all", function()
    local dir = helpers.tmpdir()
    helpers.writefile(dir .. "/secret", SECRET .. "\n")
    cl:with_client({ "a" }, function(t)
      assert.are.equal("ok", t:request("a", "echo", "ok"))
    end, { secret_file = dir .. "/secret" })
  end)

  it("never links a node with another secret; it reaches no handler and no route", function()
    with_client(function(t)
      local before = stats(t, "a")
      local notes = #assert(t:request("a", "notes"))
      local runs = t:request("a", "count")
      local failures = {}
      local wrong = node.new{ name = "mallory", peers = { cl.addr.a }, heartbeat = 0.1, timeout = 1,
                              handshake_timeout = 0.5, secret = "guessed", reconnect = { min = 0.05, max = 0.1 },
                              log = { debug = function() end, info = function() end, error = print,
                                      warn = function(...) failures[#failures + 1] = string.format(...) end } }
      wrong:on_peer(function(name, state) error("mallory saw " .. name .. " " .. state) end)
      assert(wrong:start())
      assert(helpers.wait_until(function() return stats(t, "a").auth_failures >= before.auth_failures + 3 end, 10))
      -- it never got as far as a request, a note or an announcement
      assert.are.same({ nil, "unreachable" }, { wrong:request("a", "work", nil, { timeout = 0.2 }) })
      assert.is_nil(wrong:peers().a)
      wrong:stop()
      local after = stats(t, "a")
      assert.are.equal(before.links_up, after.links_up)
      assert.are.equal(runs, t:request("a", "count"))
      assert.are.equal(notes, #t:request("a", "notes"))
      for _, who in ipairs{ "a", "b", "c" } do assert.is_nil(assert(t:request(who, "routes")).mallory, who) end
      assert.truthy(cl:stderr("a"):find("rejected [^\n]*authentication failed", 1))
      -- and the good client was served all along
      assert.are.equal("still", t:request("c", "echo", "still"))
    end)
  end)

  it("refuses a plain hello, and a raw client can make no handler run and inject no route", function()
    with_client(function(t)
      local before = stats(t, "a")
      local runs = t:request("a", "count")
      local c = raw()
      c:send(json.encode{ kind = "hello", v = 2, node = "intruder", inc = 1 })
      c:send(json.encode{ kind = "req", src = "intruder", dst = "a", type = "work", id = 1, inc = 1, hops = 0, ttl = 5 })
      c:send(json.encode{ kind = "msg", src = "intruder", dst = "a", type = "note", hops = 0, body = "pwned" })
      c:send(envelope.encode_links("intruder", 1, 9, { { node = "a", inc = 1 } }))
      -- refused without a word of why
      assert.are.same({ nil, "closed" }, { c:recv(2) })
      c:close()
      local after = stats(t, "a")
      assert.are.equal(before.auth_failures + 1, after.auth_failures)
      assert.are.equal(before.links_up, after.links_up)
      assert.are.equal(runs, t:request("a", "count"))
      assert.is_nil(assert(t:request("a", "routes")).intruder)
      assert.falsy(cl:stdout("a"):find("pwned", 1, true))
    end)
  end)

  it("never lets an impostor take an existing node's place", function()
    with_client(function(t)
      local downs = cl:count("a", "down b")
      local before = stats(t, "a")
      -- a newer incarnation of "b" once replaced the real b's link at once
      for _, hello in ipairs{
        { kind = "hello", v = 2, node = "b", inc = math.floor(comm.time() * 1000) + 1 },
        { kind = "hello", v = 2, node = "b", inc = math.floor(comm.time() * 1000) + 2, nonce = string.rep("0", 64) },
      } do
        local c = raw()
        c:send(json.encode(hello))
        local ch = expect(c, "challenge")
        if ch then c:send(json.encode{ kind = "auth", mac = string.rep("f", 64) }) end
        assert.are.same({ nil, "closed" }, { expect(c, "welcome") })
        c:close()
      end
      assert.are.equal(before.auth_failures + 2, stats(t, "a").auth_failures)
      local ok = 0
      for i = 1, 30 do
        if t:request("b", "echo", i, { timeout = 1 }) == i then ok = ok + 1 end
      end
      assert.are.equal(30, ok)
      assert.are.equal(downs, cl:count("a", "down b"))
    end)
  end)

  it("refuses a recorded handshake replayed later", function()
    with_client(function(t)
      -- a genuine handshake, by hand, recording what the dialler sent
      local nonce_d, nonce_hex = auth.nonce()
      local hello = json.encode{ kind = "hello", v = 2, node = "recorder", inc = 7, nonce = nonce_hex }
      local c = raw()
      c:send(hello)
      local ch = assert(expect(c, "challenge"))
      local proof = json.encode{ kind = "auth", mac = auth.proof(SECRET, "dialler", nonce_d,
                                                                  auth.unhex(ch.nonce, 32), "recorder", "a") }
      c:send(proof)
      local w = assert(expect(c, "welcome"))
      assert.is_true(auth.check(SECRET, w.mac, "acceptor", nonce_d, auth.unhex(ch.nonce, 32), "recorder", "a"))
      c:send(json.encode{ kind = "bye", reason = "stop" })
      c:close()
      assert(cl:wait_line("a", "down recorder"))
      -- the same bytes again: a's new challenge makes the old proof worthless
      local before = stats(t, "a")
      local r = raw()
      r:send(hello)
      local ch2 = assert(expect(r, "challenge"))
      assert.are_not.equal(ch.nonce, ch2.nonce)
      r:send(proof)
      assert.are.same({ nil, "closed" }, { expect(r, "welcome") })
      r:close()
      assert.are.equal(before.auth_failures + 1, stats(t, "a").auth_failures)
      assert.are.equal(1, cl:count("a", "up recorder"))
    end)
  end)

  it("never believes an acceptor that cannot prove the secret (a replayed welcome)", function()
    helpers.run(function()
      -- a fake "a" that answers every hello with a recorded challenge and welcome
      local l = assert(comm.listen("127.0.0.1:0"))
      local served = 0
      comm.spawn(function()
        while true do
          local c = l:accept()
          if not c then return end
          served = served + 1
          c:recv(1)
          c:send(json.encode{ kind = "challenge", node = "a", nonce = string.rep("ab", 32) })
          c:recv(1)
          c:send(json.encode{ kind = "welcome", v = 2, node = "a", inc = 1, mac = string.rep("cd", 32) })
          c:recv(1)
          c:close()
        end
      end)
      local _, port = l:addr()
      local ups = 0
      local n = node.new{ name = "victim", peers = { "127.0.0.1:" .. port }, secret = SECRET, handshake_timeout = 0.5,
                          reconnect = { min = 0.05, max = 0.1 },
                          log = { debug = function() end, info = function() end, warn = function() end, error = print } }
      n:on_peer(function() ups = ups + 1 end)
      assert(n:start())
      assert(helpers.wait_until(function() return n:stats().auth_failures >= 2 end, 5))
      assert.are.equal(0, ups)
      assert.are.equal(0, n:stats().links_up)
      assert.is_true(served >= 2)
      n:stop()
      l:close()
    end)
  end)

  it("as a dialler too, reads no frame over 64 KiB before the handshake completes", function()
    helpers.run(function()
      local l = assert(comm.listen("127.0.0.1:0"))
      comm.spawn(function()
        while true do
          local c = l:accept()
          if not c then return end
          c:recv(1)
          c:write(string.pack(">I4", 65537) .. string.rep("w", 100)) -- a "welcome" of 64 KiB + 1
          c:recv(1)
          c:close()
        end
      end)
      local _, port = l:addr()
      local n = node.new{ name = "dialler", peers = { "127.0.0.1:" .. port }, handshake_timeout = 0.5,
                          reconnect = { min = 0.05, max = 0.1 },
                          log = { debug = function() end, info = function() end, warn = function() end, error = print } }
      assert(n:start())
      assert(helpers.wait_until(function() return n:stats().frame_too_large >= 2 end, 5))
      assert.are.equal(0, n:stats().links_up)
      n:stop()
      l:close()
    end)
  end)

  it("reads no frame over 64 KiB before a handshake completes, and any size after", function()
    with_client(function(t)
      local before = stats(t, "a")
      local c = raw()
      c:write(string.pack(">I4", 65537))
      assert.are.same({ nil, "closed" }, { c:recv(2) })
      c:close()
      local after = stats(t, "a")
      assert.are.equal(before.frame_too_large + 1, after.frame_too_large)
      -- an authenticated link carries a 1 MiB body either way
      local big = string.rep("x", 1024 * 1024)
      assert.are.equal(#big, #assert(t:request("c", "echo", big, { timeout = 5 })))
    end)
  end)

  it("warns at start when it listens beyond loopback with neither secret nor tls", function()
    helpers.run(function()
      local function warnings(opts)
        local got = {}
        opts.log = { debug = function() end, info = function() end, error = print,
                     warn = function(...) got[#got + 1] = string.format(...) end }
        local n = node.new(opts)
        assert(n:start())
        n:stop()
        return table.concat(got, "\n")
      end
      assert.truthy(warnings{ name = "open", listen = "0.0.0.0:0" }:find("unauthenticated", 1, true))
      assert.falsy(warnings{ name = "closed", listen = "0.0.0.0:0", secret = SECRET }:find("unauthenticated", 1, true))
      assert.falsy(warnings{ name = "local", listen = "127.0.0.1:0" }:find("unauthenticated", 1, true))
    end)
  end)

  it("raises on a bad secret option", function()
    assert.has_error(function() node.new{ name = "x", secret = "" } end)
    assert.has_error(function() node.new{ name = "x", secret = 42 } end)
    assert.has_error(function() node.new{ name = "x", secret = "a", secret_file = "/dev/null" } end)
    assert.has_error(function() node.new{ name = "x", secret_file = "/nonexistent/secret" } end)
  end)
end)
