-- CONTRACT §8 "TLS on connections": opts.tls on listen/serve/connect over
-- real loopback sockets, with certificates made at test time
-- (spec/tls_certs.lua). Framed and raw I/O, big frames, backpressure,
-- timeouts and close-with-flush behave as over plain TCP, also with every
-- read and write cut to one byte (core.max_io(1)); verification failures
-- are "tls: ..." errors; refused handshakes never reach a handler and are
-- counted. Interop with other TLS stacks: spec/integration/tls_interop_spec.lua.
local comm = require "luacomm"
local core = require "luacomm.core"
local helpers = require "helpers"
local certs = require "tls_certs"

local KiB, MiB = 1024, 1024 * 1024
local close_all = helpers.close_all

local function payload(n, seed)
  local t, s = {}, seed or 0
  for i = 1, n // 16 + 1 do t[i] = ("%015x|"):format((i + s) * 2654435761 % (1 << 60)) end
  return table.concat(t):sub(1, n)
end

-- A TLS listener on 127.0.0.1 and the client end connected to it (checking
-- the server's certificate against the test CA), with the server end.
local function tls_pair(server_opts, client_opts)
  local l, addr = helpers.listen({ tls = certs.server(nil, server_opts) })
  local c = assert(comm.connect(addr, { tls = certs.client(client_opts) }))
  local s = assert(l:accept(5))
  return c, s, l, addr
end

-- A framed echo server over TLS; counts the connections its handler saw.
local function echo_server(tls)
  local seen = { n = 0 }
  local l = assert(comm.serve("127.0.0.1:0", function(conn)
    seen.n = seen.n + 1
    seen.last = conn:tls()
    while true do
      local f = conn:recv()
      if not f then return end
      assert(conn:send(f))
    end
  end, { tls = tls or certs.server() }))
  local host, port = l:addr()
  return l, host .. ":" .. port, seen
end

-- The core's counter of refused TLS accepts goes up by n (within 5 s).
local function failures_grow(before, n)
  return helpers.wait_until(function() return comm.stats().tls_failures >= before + n end, 5, 0.005)
end

-- Runs `code` in a fresh lua5.4 with the certificate directory as CERTS;
-- returns status, stdout, stderr (the log).
local function run_lua(code)
  return helpers.run_lua(("CERTS = %q\n"):format(certs.dir()) .. code)
end

-- The I/O cases, run at full speed and again one byte at a time.
local function io_cases(bytewise)
  local suffix = bytewise and " [1-byte I/O]" or ""
  local BIG = bytewise and 20 * KiB or 8 * MiB

  it("framed echo; conn:tls() on both ends" .. suffix, function()
    helpers.run(function()
      local c, s, l = tls_pair()
      assert.is_true(c:send("hello"))
      assert.are.equal("hello", s:recv(5))
      assert.is_true(s:send(""))
      assert.are.equal("", c:recv(5))
      local ct, st = c:tls(), s:tls()
      assert.matches("^TLSv1%.[23]$", ct.version)
      assert.are.equal(ct.version, st.version)
      assert.are.equal(ct.cipher, st.cipher)
      assert.are.equal("localhost", ct.peer)
      assert.is_true(ct.verified)
      assert.are.same({ "localhost" }, ct.peer_names)
      assert.is_nil(st.peer) -- no client certificate was asked for
      close_all(c, s, l)
    end)
  end)

  it("raw write/read/readline, and an end of stream" .. suffix, function()
    helpers.run(function()
      local c, s, l = tls_pair()
      assert.is_true(c:write("line one\r\nline two\nrest"))
      assert.are.equal("line one", s:readline(5))
      assert.are.equal("line two", s:readline(5))
      assert.are.equal("re", s:read(2, 5))
      c:close()
      assert.are.equal("st", s:readline(5)) -- the last line has no end
      assert.are.same({ nil, "closed" }, { s:read(1, 5) })
      close_all(s, l)
    end)
  end)

  it(("a %d-byte frame and 200 pipelined small ones echo intact, in order"):format(BIG) .. suffix, function()
    helpers.run(function()
      local l, addr = echo_server()
      local c = assert(comm.connect(addr, { tls = certs.client() }))
      local big = payload(BIG, 7)
      assert.is_true(c:send(big))
      assert.is_true(c:recv(60) == big, "big frame intact")
      for i = 1, 200 do assert.is_true(c:send("frame " .. i)) end
      for i = 1, 200 do assert.are.equal("frame " .. i, c:recv(20)) end
      close_all(c, l)
    end, 120)
  end)

  it("readable and comm.select wait for a whole frame decrypted" .. suffix, function()
    helpers.run(function()
      local c, s, l = tls_pair()
      assert.is_false(s:readable(0))
      assert.are.same({ nil, "timeout" }, { s:readable(0.05) })
      assert.is_true(c:send("ready?"))
      assert.is_true(s:readable(5))
      assert.is_true(s:readable(0)) -- nothing was taken
      assert.is_true(c:send("second"))
      local i, f = comm.select({ { s, "recv" } }, 5)
      assert.are.equal(1, i)
      assert.are.equal("ready?", f)
      assert.are.equal("second", s:recv(5))
      close_all(c, s, l)
    end)
  end)

  it("a recv with nothing coming times out; the connection still works" .. suffix, function()
    helpers.run(function()
      local c, s, l = tls_pair()
      assert.are.same({ nil, "timeout" }, { s:recv(0.05) })
      assert.is_true(c:send("late"))
      assert.are.equal("late", s:recv(5))
      close_all(c, s, l)
    end)
  end)

  it("close flushes what was sent before it" .. suffix, function()
    helpers.run(function()
      local c, s, l = tls_pair()
      local n = bytewise and 20 or 2000
      for i = 1, n do assert.is_true(c:send(payload(100, i))) end
      c:close()
      for i = 1, n do assert.is_true(s:recv(30) == payload(100, i), "frame " .. i) end
      assert.are.same({ nil, "closed" }, { s:recv(5) })
      close_all(s, l)
    end, 60)
  end)
end

describe("tls", function()
  io_cases(false)

  it("a plain connection's conn:tls() is nil", function()
    helpers.run(function()
      local c, s, l = helpers.pair()
      assert.is_nil(c:tls())
      assert.is_nil(s:tls())
      close_all(c, s, l)
    end)
  end)

  it("backpressure: a sender blocks on a peer that does not read, then everything arrives", function()
    helpers.run(function()
      local FRAME, N = 64 * KiB, 512 -- 32 MiB in all
      local c, s, l = tls_pair()
      local body = payload(FRAME - 8)
      local sent = 0
      local sender = comm.spawn(function()
        for i = 1, N do
          assert.is_true(c:send(("%08d"):format(i) .. body))
          sent = i
        end
      end)
      assert.truthy(helpers.wait_until(function()
        local before = sent
        comm.sleep(0.02)
        return sender:status() == "waiting" and sent == before
      end, 10))
      assert.is_true(sent < N, "the sender was held back")
      assert.is_true(c:stats().pending_out <= 1 * MiB + FRAME + 4, "pending_out " .. c:stats().pending_out)
      assert.is_true(s:stats().pending_in <= 2 * MiB + FRAME, "pending_in " .. s:stats().pending_in)
      for i = 1, N do
        local f = s:recv(30)
        assert.are.equal(("%08d"):format(i), f and f:sub(1, 8))
      end
      assert.are.equal(N, sent)
      close_all(c, s, l)
    end, 120)
  end)

  it("a handshake that never completes ends in a connect timeout", function()
    helpers.run(function()
      local l, addr = helpers.listen() -- plain TCP: the ClientHello goes unanswered
      local t0 = comm.now()
      assert.are.same({ nil, "timeout" }, { comm.connect(addr, { tls = certs.client(), timeout = 0.2 }) })
      assert.is_true(comm.now() - t0 < 5)
      l:close()
    end)
  end)

  it("a server drops a peer that never finishes its handshake (tls.handshake_timeout)", function()
    helpers.run(function()
      local l, addr = helpers.listen({ tls = certs.server(nil, { handshake_timeout = 0.1 }) })
      local before = comm.stats().tls_failures
      local raw = assert(comm.connect(addr)) -- plain TCP, silent
      assert.truthy(failures_grow(before, 1))
      assert.are.same({ nil, "closed" }, { raw:read(1, 5) })
      assert.are.same({ nil, "timeout" }, { l:accept(0.05) })
      close_all(raw, l)
    end)
  end)

  it("100 peers stuck in their handshake do not keep a good client out", function()
    helpers.run(function()
      local l, addr, seen = echo_server()
      local silent = {}
      for i = 1, 100 do silent[i] = assert(comm.connect(addr)) end -- plain TCP, never says hello
      local c = assert(comm.connect(addr, { tls = certs.client(), timeout = 5 }))
      assert.is_true(c:send("through"))
      assert.are.equal("through", c:recv(5))
      assert.are.equal(1, seen.n)
      close_all(c, l, table.unpack(silent))
    end)
  end)

  describe("the client verifies the server", function()
    local cases = {
      { "a certificate from another CA", "rogue", "127.0.0.1", nil, "unable to get local issuer certificate" },
      { "the system store, which does not know the test CA", "server", "127.0.0.1", { ca = false },
        "unable to get local issuer certificate" },
      { "the wrong name", "other", "localhost", nil, "hostname mismatch" },
      { "a server_name the certificate lacks", "server", "127.0.0.1", { server_name = "db1" }, "hostname mismatch" },
      { "an IP literal not among its IP entries", "dnsonly", "127.0.0.1", nil, "IP address mismatch" },
      { "an expired certificate", "expired", "127.0.0.1", nil, "certificate has expired" },
    }
    for _, case in ipairs(cases) do
      local what, cert, host, extra, reason = table.unpack(case)
      it("and refuses " .. what .. ": nil, \"tls: ...\"; the server's handler never runs", function()
        helpers.run(function()
          local l, _, seen = echo_server(certs.server(cert))
          local _, port = l:addr()
          local before = comm.stats().tls_failures
          local opts = certs.client(extra)
          if opts.ca == false then opts.ca = nil end
          local c, err = comm.connect(host .. ":" .. port, { tls = opts })
          assert.is_nil(c)
          assert.are.equal("tls: certificate verify failed: " .. reason, err)
          assert.truthy(failures_grow(before, 1)) -- the server saw the client's alert
          assert.are.equal(0, seen.n)
          l:close()
        end)
      end)
    end

    it("and accepts a DNS name and ::1 the certificate holds", function()
      helpers.run(function()
        local l = echo_server()
        local _, port = l:addr()
        for _, addr in ipairs({ "localhost:" .. port, "127.0.0.1:" .. port }) do
          local c = assert(comm.connect(addr, { tls = certs.client() }))
          assert.is_true(c:tls().verified)
          c:close()
        end
        l:close()
        local l6 = comm.listen("[::1]:0", { tls = certs.server() })
        if l6 then -- IPv6 may be off on this machine
          local _, p6 = l6:addr()
          local c = assert(comm.connect("[::1]:" .. p6, { tls = certs.client() }))
          local s = assert(l6:accept(5))
          close_all(c, s, l6)
        end
      end)
    end)
  end)

  it("verify_name = false skips the name check but still checks the chain", function()
    helpers.run(function()
      -- "other" is from the test CA but names neither 127.0.0.1 nor localhost
      local l = echo_server(certs.server("other"))
      local _, port = l:addr()
      local c = assert(comm.connect("127.0.0.1:" .. port, { tls = certs.client{ verify_name = false } }))
      assert.is_true(c:tls().verified)
      assert(c:send("named"))
      assert.are.equal("named", c:recv(5))
      c:close()
      l:close()
      -- a certificate from another CA is still refused
      local rogue = echo_server(certs.server("rogue"))
      local _, rport = rogue:addr()
      local bad, err = comm.connect("127.0.0.1:" .. rport, { tls = certs.client{ verify_name = false } })
      assert.is_nil(bad)
      assert.are.equal("tls: certificate verify failed: unable to get local issuer certificate", err)
      rogue:close()
    end)
  end)

  it("verify = false connects to any certificate, and says so in the log", function()
    local st, out, err = run_lua([[
      local comm = require "luacomm"
      comm.run(function()
        local l = assert(comm.listen("127.0.0.1:0", { tls = { cert = CERTS .. "/rogue.pem", key = CERTS .. "/rogue.key" } }))
        local _, port = l:addr()
        local c = assert(comm.connect("127.0.0.1:" .. port, { tls = { verify = false } }))
        local s = assert(l:accept(5))
        assert(c:send("ok"))
        io.write(s:recv(5), " ", tostring(c:tls().verified))
        c:close(); s:close(); l:close()
      end)
    ]])
    assert.are.equal(0, st, err)
    assert.are.equal("ok false", out)
    assert.matches("%[warn%] tls: verify = false: the server's certificate is not checked", err)
  end)

  it("a refused handshake is logged with the peer's address and counted", function()
    local st, out, err = run_lua([[
      local comm = require "luacomm"
      comm.run(function()
        local l = assert(comm.listen("127.0.0.1:0", { tls = { cert = CERTS .. "/server.pem", key = CERTS .. "/server.key" } }))
        local _, port = l:addr()
        local raw = assert(comm.connect("127.0.0.1:" .. port))
        raw:write("GET / HTTP/1.0\r\n\r\n") -- not TLS at all
        assert(raw:read(1, 5) == nil)
        raw:close(); l:close()
        io.write(comm.stats().tls_failures)
      end)
    ]])
    assert.are.equal(0, st, err)
    assert.are.equal("1", out)
    assert.matches("%[warn%] connection from 127%.0%.0%.1:%d+ refused: tls: [^\n]+", err)
  end)

  describe("mutual TLS (server verify = true)", function()
    local server = function() return certs.server(nil, { ca = certs.path("ca.pem"), verify = true }) end

    it("admits a client with a certificate from the CA; the server sees its CN", function()
      helpers.run(function()
        local l, addr, seen = echo_server(server())
        local c = assert(comm.connect(addr, { tls = certs.client({ cert = certs.path("client.pem"),
                                                                  key = certs.path("client.key") }) }))
        assert.is_true(c:send("me"))
        assert.are.equal("me", c:recv(5))
        assert.are.equal("client1", seen.last.peer)
        assert.is_true(seen.last.verified)
        close_all(c, l)
      end)
    end)

    local refused = {
      { "no certificate", {} },
      { "a certificate from another CA", { cert = certs.path("rogue.pem"), key = certs.path("rogue.key") } },
    }
    for _, case in ipairs(refused) do
      it("refuses a client with " .. case[1] .. ": it never reaches the handler", function()
        helpers.run(function()
          local l, addr, seen = echo_server(server())
          local before = comm.stats().tls_failures
          local c, err = comm.connect(addr, { tls = certs.client(case[2]) })
          if c then
            -- TLS 1.3: the client finished first; the server's alert
            -- arrives at its first read.
            c:send("let me in")
            local f, rerr = c:recv(5)
            assert.is_nil(f)
            assert.truthy(rerr)
            c:close()
          else
            assert.matches("^tls: ", err)
          end
          assert.truthy(failures_grow(before, 1))
          assert.are.equal(0, seen.n)
          -- A client with a good certificate is still served.
          local good = assert(comm.connect(addr, { tls = certs.client({ cert = certs.path("client.pem"),
                                                                       key = certs.path("client.key") }) }))
          assert.is_true(good:send("still here"))
          assert.are.equal("still here", good:recv(5))
          assert.are.equal(1, seen.n)
          close_all(good, l)
        end)
      end)
    end
  end)

  describe("bad files are errors at listen/serve/connect time", function()
    local function srv(t) return { tls = t } end
    it("naming a missing cert, key or ca file", function()
      helpers.run(function()
        local nope = certs.dir() .. "/nope.pem"
        local r = { comm.listen("127.0.0.1:0", srv({ cert = nope, key = certs.path("server.key") })) }
        assert.are.same({ nil, "tls: cannot read cert file '" .. nope .. "': No such file or directory" }, r)
        r = { comm.serve("127.0.0.1:0", function() end, srv({ cert = certs.path("server.pem"), key = nope })) }
        assert.are.same({ nil, "tls: cannot read key file '" .. nope .. "': No such file or directory" }, r)
        r = { comm.listen("127.0.0.1:0", srv(certs.server(nil, { ca = nope, verify = true }))) }
        assert.are.same({ nil, "tls: cannot read ca file '" .. nope .. "': No such file or directory" }, r)
        local l, addr = helpers.listen({ tls = certs.server() })
        r = { comm.connect(addr, { tls = { ca = nope } }) }
        assert.are.same({ nil, "tls: cannot read ca file '" .. nope .. "': No such file or directory" }, r)
        r = { comm.connect(addr, { tls = certs.client({ cert = nope, key = certs.path("client.key") }) }) }
        assert.are.same({ nil, "tls: cannot read cert file '" .. nope .. "': No such file or directory" }, r)
        assert.are.same({ nil, "timeout" }, { l:accept(0.01) }) -- nothing was even dialled
        l:close()
      end)
    end)

    it("naming a key that does not match its certificate, or a file that is not PEM", function()
      helpers.run(function()
        local cert, key = certs.path("server.pem"), certs.path("client.key")
        assert.are.same({ nil, ("tls: key file '%s' does not match cert file '%s'"):format(key, cert) },
          { comm.listen("127.0.0.1:0", srv({ cert = cert, key = key })) })
        local junk = helpers.writefile(certs.dir() .. "/junk.pem", "not a certificate\n")
        local _, err = comm.listen("127.0.0.1:0", srv({ cert = junk, key = key }))
        assert.matches("^tls: bad cert file '" .. junk:gsub("%p", "%%%0") .. "': ", err)
        _, err = comm.connect("127.0.0.1:1", { tls = { ca = junk } })
        assert.matches("^tls: bad ca file '" .. junk:gsub("%p", "%%%0") .. "': ", err)
      end)
    end)

    it("a listener without cert and key, or a bad option, is refused", function()
      helpers.run(function()
        local listeners = comm.stats().listeners
        assert.are.same({ nil, "tls: listening needs both tls.cert and tls.key" },
          { comm.listen("127.0.0.1:0", srv({ cert = certs.path("server.pem") })) })
        assert.are.same({ nil, "tls: tls.cert and tls.key go together" },
          { comm.connect("127.0.0.1:1", { tls = { cert = certs.path("client.pem") } }) })
        assert.has_error(function() comm.listen("127.0.0.1:0", srv(true)) end,
          "bad option 'tls' (table expected, got boolean)")
        assert.has_error(function() comm.connect("127.0.0.1:1", { tls = "yes" }) end,
          "bad option 'tls' (table expected, got string)")
        assert.has_error(function() comm.listen("127.0.0.1:0", srv(certs.server(nil, { verify = "yes" }))) end)
        assert.has_error(function() comm.connect("127.0.0.1:1", { tls = { ca = 42 } }) end)
        assert.has_error(function() comm.listen("127.0.0.1:0", srv(certs.server(nil, { handshake_timeout = 0 }))) end)
        assert.are.equal(listeners, comm.stats().listeners)
      end)
    end)
  end)

  it("a plain client is refused by a TLS server, which keeps serving TLS clients", function()
    helpers.run(function()
      local l, addr, seen = echo_server()
      local before = comm.stats().tls_failures
      local plain = assert(comm.connect(addr))
      plain:send("hello?")
      assert.are.same({ nil, "closed" }, { plain:recv(5) })
      assert.truthy(failures_grow(before, 1))
      local c = assert(comm.connect(addr, { tls = certs.client() }))
      assert.is_true(c:send("x"))
      assert.are.equal("x", c:recv(5))
      assert.are.equal(1, seen.n)
      close_all(plain, c, l)
    end)
  end)

  describe("with core.max_io(1)", function()
    setup(function() core.max_io(1) end)
    teardown(function() core.max_io(0) end)
    io_cases(true)

    -- Above, both ends cut their records to one byte too. Here the peer is
    -- another process writing whole records, so each read leaves most of a
    -- record decrypted inside OpenSSL, where no readiness event announces it.
    it("frames from a peer writing whole records arrive a byte at a time [1-byte I/O]", function()
      helpers.run(function()
        local l, _, seen = echo_server()
        local _, port = l:addr()
        local p = helpers.spawn_host({}, {
          argv = { "lua5.4", "-e", ([[
            local comm = require "luacomm"
            comm.run(function()
              local c = assert(comm.connect("localhost:%d", { tls = { ca = %q } }))
              local frames = { "hello", "", ("0123456789"):rep(2000), "bye" }
              for _, f in ipairs(frames) do assert(c:send(f)) end
              for _, f in ipairs(frames) do assert(c:recv(30) == f, "echo of " .. #f .. " bytes") end
              c:close()
              io.write("ok")
            end)]]):format(port, certs.path("ca.pem")) },
          env = { "LUA_PATH=" .. helpers.shquote(package.path), "LUA_CPATH=" .. helpers.shquote(package.cpath),
                  "LUACOMM_MAX_IO=0" },
        })
        assert.are.equal(0, p:wait(60), p:stderr())
        assert.are.equal("ok", p:stdout())
        assert.are.equal(1, seen.n)
        l:close()
      end, 90)
    end)
  end)
end)
