-- HTTPS both ways (CONTRACT §9 with the tls options of §8): http.serve
-- with tls, http.request on https:// URLs, certificates made at test time,
-- curl as a client from another TLS stack.
local http = require "luacomm.http"
local helpers = require "helpers"
local certs = require "tls_certs"

local function tls_server(extra)
  local tls = { cert = certs.path("server.pem"), key = certs.path("server.key") }
  for k, v in pairs(extra or {}) do tls[k] = v end
  local srv = assert(http.serve("127.0.0.1:0", function(req)
    return 200, { ["content-type"] = "text/plain" }, "secure " .. req.method .. " " .. req.path .. " " .. req.body
  end, { tls = tls }))
  local _, port = srv:addr()
  return srv, port
end

describe("https", function()
  it("serves and fetches over TLS, by IP and by name, checking the certificate", function()
    helpers.run(function()
      local srv, port = tls_server()
      local ca = { ca = certs.path("ca.pem") }
      local res = assert(http.request{ url = "https://127.0.0.1:" .. port .. "/a", tls = ca })
      assert.are.equal(200, res.status)
      assert.are.equal("secure GET /a ", res.body)
      res = assert(http.request{ method = "POST", url = "https://localhost:" .. port .. "/b", body = "x", tls = ca })
      assert.are.equal("secure POST /b x", res.body)
      srv:close()
    end)
  end)

  it("returns nil, \"tls: ...\" when the certificate does not check out, and the server serves on", function()
    helpers.run(function()
      local srv, port = tls_server()
      local url = "https://127.0.0.1:" .. port .. "/"
      local cases = {
        { tls = { ca = certs.path("other_ca.pem") }, want = "^tls: certificate verify failed" },
        { tls = nil, want = "^tls: certificate verify failed" }, -- the system store knows no test CA
        { tls = { ca = certs.path("ca.pem"), server_name = "other" }, want = "^tls: certificate verify failed" },
      }
      for _, case in ipairs(cases) do
        local res, err = http.request{ url = url, tls = case.tls, timeout = 5 }
        assert.is_nil(res)
        assert.matches(case.want, err)
      end
      -- plain HTTP to the TLS port, and TLS to a plain port: errors, not raises
      local res, err = http.request{ url = "http://127.0.0.1:" .. port .. "/", timeout = 5 }
      assert.is_nil(res)
      assert.is_string(err)
      local plain = assert(http.serve("127.0.0.1:0", function() return 200, nil, "plain" end))
      local _, pport = plain:addr()
      res, err = http.request{ url = "https://127.0.0.1:" .. pport .. "/", tls = { ca = certs.path("ca.pem") }, timeout = 5 }
      assert.is_nil(res)
      assert.matches("^tls: ", err)
      plain:close()
      assert.are.equal(200, assert(http.request{ url = url, tls = { ca = certs.path("ca.pem") } }).status)
      srv:close()
    end)
  end)

  it("requires a client certificate with verify = true (mutual TLS)", function()
    helpers.run(function()
      local srv, port = tls_server{ ca = certs.path("ca.pem"), verify = true }
      local url = "https://127.0.0.1:" .. port .. "/m"
      local failures = helpers.core.stats().tls_failures
      local res = http.request{ url = url, tls = { ca = certs.path("ca.pem") }, timeout = 5 }
      assert.is_nil(res)
      -- refused by the server: counted there, as comm.listen counts its own
      assert(helpers.wait_until(function() return helpers.core.stats().tls_failures > failures end, 5))
      res = assert(http.request{ url = url, timeout = 5, tls = { ca = certs.path("ca.pem"),
        cert = certs.path("client.pem"), key = certs.path("client.key") } })
      assert.are.equal("secure GET /m ", res.body)
      srv:close()
    end)
  end)

  it("fails at serve time on a bad certificate path", function()
    helpers.run(function()
      local srv, err = http.serve("127.0.0.1:0", function() return 200 end,
        { tls = { cert = "/nonexistent/server.pem", key = certs.path("server.key") } })
      assert.is_nil(srv)
      assert.matches("/nonexistent/server.pem", err, 1, true)
    end)
  end)

  it("talks to curl", function()
    helpers.run(function()
      local srv, port = tls_server()
      local p = helpers.spawn_host({}, { argv = { "env", "-u", "LD_PRELOAD", "curl", "-s", "-S", "-m", "5",
        "--cacert", certs.path("ca.pem"), "-d", "from curl", "https://127.0.0.1:" .. port .. "/c" } })
      assert.are.equal(0, p:wait(10), p:stderr())
      assert.are.equal("secure POST /c from curl", p:stdout())
      srv:close()
    end)
  end)
end)
