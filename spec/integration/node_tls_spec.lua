-- Node links over mutual TLS (CONTRACT §8): real node processes "a" - "b"
-- with certificates made at test time for their names, and peers whose
-- certificate names another node, or that have none. A link comes up only
-- when each end's verified certificate names the node it claims to be.
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"
local certs = require "tls_certs"
local node = require "luacomm.node"

local function noop() end

describe("node links over TLS", function()
  local cl

  setup(function()
    cl = cluster.start({ { name = "a", peers = { "b" }, tls = certs.node("a") }, { name = "b", tls = certs.node("b") } },
                       { heartbeat = 0.2, timeout = 2, handshake_timeout = 1 },
                       { { "a", "up b" } })
  end)

  teardown(function() cl:stop_clean() end)

  local function stats(t, name) return assert(t:request(name, "stats")) end

  local function quiet(failures)
    return { debug = noop, info = noop, error = print,
             warn = function(...) if failures then failures[#failures + 1] = string.format(...) end end }
  end

  it("links nodes whose certificates name them, and carries requests", function()
    helpers.run(function()
      local t = cl:client("tc", { "a" }, { tls = certs.node("tc") })
      assert.are.equal("hi", t:request("b", "echo", "hi", { timeout = 2, retries = 2 }))
      assert.are.equal(0, stats(t, "a").node.auth_failures)
      assert.is_false(t:peers().a.state ~= "up")
      t:stop()
    end)
  end)

  it("rejects a certificate for x claiming to be another node, on either side", function()
    helpers.run(function()
      local t = cl:client("tc2", { "a" }, { tls = certs.node("tc2") })
      local before = stats(t, "a").node
      local downs = cl:count("a", "down b")
      -- dialling: a node calling itself "b", holding x's certificate
      local fake = node.new{ name = "b", peers = { cl.addr.a }, tls = certs.node("x"), handshake_timeout = 0.5,
                             reconnect = { min = 0.05, max = 0.1 }, log = quiet() }
      fake:on_peer(function(name, state) error("the impostor saw " .. name .. " " .. state) end)
      assert(fake:start())
      assert(helpers.wait_until(function() return stats(t, "a").node.auth_failures >= before.auth_failures + 2 end, 10))
      fake:stop()
      assert.are.equal(downs, cl:count("a", "down b"))
      assert.are.equal("b", t:request("b", "echo", "b", { timeout = 2 }))
      assert.truthy(cl:stderr("a"):find("certificate does not name b", 1, true))
      -- accepting: a listener calling itself "a", holding x's certificate
      local fake_a = node.new{ name = "a", listen = "127.0.0.1:0", tls = certs.node("x"), log = quiet() }
      assert(fake_a:start())
      local victim = node.new{ name = "victim", peers = { fake_a.listen_addr }, tls = certs.node("victim"),
                               handshake_timeout = 0.5, reconnect = { min = 0.05, max = 0.1 }, log = quiet() }
      assert(victim:start())
      assert(helpers.wait_until(function() return victim:stats().auth_failures >= 2 end, 10))
      assert.are.equal(0, victim:stats().links_up)
      victim:stop()
      fake_a:stop()
      t:stop()
    end)
  end)

  it("never links a node without a certificate, or with one from another CA", function()
    helpers.run(function()
      local t = cl:client("tc3", { "a" }, { tls = certs.node("tc3") })
      local tls_failures = stats(t, "a").comm.tls_failures
      local plain = node.new{ name = "plain", peers = { cl.addr.a }, handshake_timeout = 0.5,
                              reconnect = { min = 0.05, max = 0.1 }, log = quiet() }
      local alien = certs.node("alien")
      alien.cert, alien.key = certs.path("rogue.pem"), certs.path("rogue.key")
      local rogue = node.new{ name = "rogue", peers = { cl.addr.a }, tls = alien, handshake_timeout = 0.5,
                              reconnect = { min = 0.05, max = 0.1 }, log = quiet() }
      assert(plain:start())
      assert(rogue:start())
      assert(helpers.wait_until(function() return stats(t, "a").comm.tls_failures >= tls_failures + 4 end, 10))
      assert.are.equal(0, plain:stats().links_up)
      assert.are.equal(0, rogue:stats().links_up)
      assert.is_nil(assert(t:request("a", "peers")).plain)
      assert.is_nil(assert(t:request("a", "peers")).rogue)
      plain:stop()
      rogue:stop()
      t:stop()
    end)
  end)

  it("takes a secret and TLS together: both must hold", function()
    helpers.run(function()
      local function pair(secret_b)
        local a = node.new{ name = "ta", listen = "127.0.0.1:0", tls = certs.node("ta"), secret = "s",
                            handshake_timeout = 0.5, log = quiet() }
        assert(a:start())
        local b = node.new{ name = "tb", peers = { a.listen_addr }, tls = certs.node("tb"), secret = secret_b,
                            handshake_timeout = 0.5, reconnect = { min = 0.05, max = 0.1 }, log = quiet() }
        assert(b:start())
        return a, b
      end
      local a, b = pair("s")
      assert(helpers.wait_until(function() return (b:peers().ta or {}).state == "up" end, 5))
      a:on("echo", function(x) return x end)
      assert.are.equal("ok", b:request("ta", "echo", "ok", { timeout = 2 }))
      b:stop(); a:stop()
      a, b = pair("wrong")
      assert(helpers.wait_until(function() return a:stats().auth_failures >= 2 end, 5))
      assert.are.equal(0, b:stats().links_up)
      b:stop(); a:stop()
    end)
  end)

  it("raises on a bad tls option", function()
    assert.has_error(function() node.new{ name = "x", tls = "yes" } end)
    assert.has_error(function() node.new{ name = "x", tls = { key = "k" } } end)
    assert.has_error(function() node.new{ name = "x", tls = { cert = "c", key = "k", ca = 1 } } end)
  end)
end)
