-- CONTRACT §8: luacomm's TLS talks to TLS stacks nobody here wrote, both
-- ways: `openssl s_server` / `openssl s_client`, and Python's ssl module as
-- a client and as a server, with mutual TLS. The peers run as real
-- processes on loopback; certificates are made at test time.
local comm = require "luacomm"
local helpers = require "helpers"
local certs = require "tls_certs"

-- External peers must not inherit the sanitizer runtime of `make test-asan`.
local ENV = { "LD_PRELOAD=" }

local function spawn(argv, stdin)
  return helpers.spawn_host(nil, { argv = argv, env = ENV, stdin = stdin })
end

local function python(code, ...)
  local path = helpers.writefile(helpers.tmpdir() .. "/peer.py", code)
  return spawn({ "python3", path, ... })
end

-- Frames in Python: 4-byte big-endian length, then the payload.
local PY_FRAMES = [[
import socket, ssl, struct, sys
def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b
def send_frame(s, m):
    s.sendall(struct.pack(">I", len(m)) + m)
def recv_frame(s):
    return recvn(s, struct.unpack(">I", recvn(s, 4))[0])
MESSAGES = [b"", b"hello", bytes(range(256)) * 1000]
]]

local function frame_echo_server(tls)
  local seen = {}
  local l = assert(comm.serve("127.0.0.1:0", function(conn)
    seen.tls = conn:tls()
    while true do
      local f = conn:recv(10)
      if not f then return end
      conn:send(f)
    end
  end, { tls = tls }))
  local _, port = l:addr()
  return l, port, seen
end

local function finished(p, timeout)
  local st = p:wait(timeout or 20)
  return st, p:stdout(), p:stderr()
end

-- Runs fn(host, port) in a spec task against examples/echo.lua serving TLS
-- on a free port under the host, and kills the host whatever fn does.
local function with_tls_echo(fn)
  helpers.run(function()
    local port = helpers.free_port()
    local host = helpers.spawn_host({ "examples/echo.lua", tostring(port), certs.path("server.pem"),
                                      certs.path("server.key") })
    local ok, err = pcall(function()
      assert.truthy(host:wait_output("echo listening on 127%.0%.0%.1:" .. port, "err"))
      fn(host, port)
    end)
    host:kill()
    assert(ok, err)
  end, 30)
end

describe("tls interop", function()
  it("Python's ssl client, with a client certificate, echoes frames through a luacomm mutual-TLS server", function()
    helpers.run(function()
      local l, port, seen = frame_echo_server(certs.server(nil, { ca = certs.path("ca.pem"), verify = true }))
      local p = python(PY_FRAMES .. [[
ca, cert, key, port = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
with socket.create_connection(("127.0.0.1", int(port))) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        for m in MESSAGES:
            send_frame(s, m)
            assert recv_frame(s) == m
        print("ok", s.version())
]], certs.path("ca.pem"), certs.path("client.pem"), certs.path("client.key"), tostring(port))
      local st, out, err = finished(p)
      assert.are.equal(0, st, err)
      assert.matches("^ok TLSv1%.3", out)
      assert.are.equal("client1", seen.tls.peer)
      l:close()
    end, 30)
  end)

  it("a luacomm client with a client certificate echoes frames through Python's ssl server", function()
    helpers.run(function()
      local p = python(PY_FRAMES .. [[
ca, cert, key = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
raw, _ = srv.accept()
with ctx.wrap_socket(raw, server_side=True) as s:
    peer = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
    try:
        while True:
            send_frame(s, recv_frame(s))
    except EOFError:
        pass
    print("peer", peer, flush=True)
]], certs.path("ca.pem"), certs.path("server.pem"), certs.path("server.key"))
      local port = assert(p:wait_output("^(%d+)\n"))
      local c = assert(comm.connect("localhost:" .. port, { tls = certs.client({
        cert = certs.path("client.pem"), key = certs.path("client.key") }) }))
      assert.are.equal("localhost", c:tls().peer)
      for _, m in ipairs({ "", "hello", ("0123456789abcdef"):rep(40000) }) do
        assert.is_true(c:send(m))
        assert.is_true(c:recv(10) == m)
      end
      c:close()
      local st, out, err = finished(p)
      assert.are.equal(0, st, err)
      assert.matches("\npeer client1\n$", out)
    end, 30)
  end)

  it("Python's ssl client refuses a luacomm server whose certificate names another host", function()
    helpers.run(function()
      local l, port, seen = frame_echo_server(certs.server("other"))
      local p = python([[
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as raw:
        ctx.wrap_socket(raw, server_hostname="localhost")
    print("connected")
except ssl.SSLCertVerificationError as e:
    print("refused:", e.verify_message)
]], certs.path("ca.pem"), tostring(port))
      local st, out, err = finished(p)
      assert.are.equal(0, st, err)
      assert.matches("^refused: Hostname mismatch", out)
      assert.is_nil(seen.tls)
      l:close()
    end, 30)
  end)

  it("examples/echo.lua PORT CERT KEY under the host serves Python's ssl client; SIGTERM ends it with close_notify", function()
    with_tls_echo(function(host, port)
      local p = python(PY_FRAMES .. [[
ca, port = sys.argv[1:3]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", int(port))) as raw:
    # a cut without close_notify would raise SSLEOFError here
    with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as s:
        for m in MESSAGES:
            send_frame(s, m)
            assert recv_frame(s) == m
        print("echoed", flush=True)
        print("clean close" if s.recv(1) == b"" else "more data", flush=True)
]], certs.path("ca.pem"), tostring(port))
      assert.truthy(p:wait_output("echoed\n"))
      host:signal("TERM")
      local st, out, perr = finished(p)
      assert.are.equal(0, st, perr)
      assert.are.equal("echoed\nclean close\n", out)
      assert.are.equal(0, host:wait(10))
    end)
  end)

  it("SIGTERM with handshakes under way and a TLS client connected: the host stops cleanly, exit 0", function()
    with_tls_echo(function(host, port)
      local silent = {}
      for i = 1, 5 do silent[i] = assert(comm.connect("127.0.0.1:" .. port)) end -- never say hello
      local c = assert(comm.connect("localhost:" .. port, { tls = certs.client() }))
      assert.is_true(c:send("x"))
      assert.are.equal("x", c:recv(5))
      host:signal("TERM")
      assert.are.equal(0, host:wait(10))
      assert.is_nil(host:stderr():match("stop timeout"), host:stderr())
      assert.are.same({ nil, "closed" }, { c:recv(5) })
      for _, s in ipairs(silent) do s:close() end
      c:close()
    end)
  end)

  it("a luacomm client reads lines from `openssl s_server -rev`", function()
    helpers.run(function()
      local port = helpers.free_port()
      local p = spawn({ "openssl", "s_server", "-accept", "127.0.0.1:" .. port, "-naccept", "1", "-rev",
                        "-cert", certs.path("server.pem"), "-key", certs.path("server.key") })
      assert(p:wait_output("ACCEPT"))
      local c = assert(comm.connect("localhost:" .. port, { tls = certs.client() }))
      assert.is_true(c:tls().verified)
      assert.is_true(c:write("hello luacomm\n"))
      assert.are.equal("mmocaul olleh", c:readline(10))
      c:close()
      p:kill()
    end, 30)
  end)

  for _, version in ipairs({ "-tls1_2", "-tls1_3" }) do
    it("`openssl s_client " .. version .. "` verifies a luacomm server and gets its line back", function()
      helpers.run(function()
        local l = assert(comm.serve("127.0.0.1:0", function(conn)
          local line = conn:readline(10)
          if line then conn:write("echo: " .. line .. " over " .. conn:tls().version .. "\n") end
          conn:close()
        end, { tls = certs.server() }))
        local _, port = l:addr()
        local input = helpers.writefile(helpers.tmpdir() .. "/in", "hello from s_client\n")
        local p = spawn({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, version, "-quiet",
                          "-CAfile", certs.path("ca.pem"), "-verify_return_error", "-verify_hostname", "localhost" },
                        input)
        local st, out, err = finished(p)
        assert.are.equal(0, st, err)
        assert.are.equal("echo: hello from s_client over " .. (version == "-tls1_2" and "TLSv1.2" or "TLSv1.3") .. "\n",
          out)
        l:close()
      end, 30)
    end)
  end

  it("an `openssl s_client -tls1_1` is refused (TLS 1.2 is the minimum) and counted", function()
    helpers.run(function()
      local l = assert(comm.serve("127.0.0.1:0", function() error("must not run") end, { tls = certs.server() }))
      local _, port = l:addr()
      local before = comm.stats().tls_failures
      local p = spawn({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-tls1_1",
                        "-cipher", "DEFAULT@SECLEVEL=0" }, "/dev/null")
      local st = finished(p)
      assert.are_not.equal(0, st)
      assert.truthy(helpers.wait_until(function() return comm.stats().tls_failures > before end, 5))
      l:close()
    end, 30)
  end)
end)
