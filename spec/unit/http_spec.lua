-- luacomm.http (CONTRACT §9): a real server and real clients over loopback.
-- Raw-socket clients check what a well-behaved client library would hide:
-- keep-alive, pipelining order, chunked bodies, the limits.
local comm = require "luacomm"
local http = require "luacomm.http"
local node = require "luacomm.node"
local helpers = require "helpers"

local raw = require "http_raw"

local function serve(handler, opts)
  local srv = assert(http.serve("127.0.0.1:0", handler, opts))
  local _, port = srv:addr()
  return srv, "127.0.0.1:" .. port, "http://127.0.0.1:" .. port
end

local function echo(req)
  return 200, { ["content-type"] = "application/json", ["x-echo"] = "yes" }, comm.json.encode{
    method = req.method, path = req.path, query = req.query, body = req.body,
    agent = req.headers["x-agent"], peer = req.peer, target = req.target }
end

describe("http.serve and http.request", function()
  it("passes method, path, decoded query, lower-case headers, body and peer; returns status, headers, body", function()
    helpers.run(function()
      local srv, _, base = serve(echo)
      local res = assert(http.request{ method = "POST", url = base .. "/a/b?x=1&y=%20two+three",
                                       headers = { ["X-Agent"] = "spec" }, body = "payload" })
      assert.are.equal(200, res.status)
      assert.are.equal("yes", res.headers["x-echo"])
      assert.are.equal("application/json", res.headers["content-type"])
      local got = comm.json.decode(res.body)
      assert.are.same({ x = "1", y = " two three" }, got.query)
      assert.are.equal("POST", got.method)
      assert.are.equal("/a/b", got.path)
      assert.are.equal("/a/b?x=1&y=%20two+three", got.target)
      assert.are.equal("payload", got.body)
      assert.are.equal("spec", got.agent)
      assert.matches("^127%.0%.0%.1:%d+$", got.peer)
      srv:close()
    end)
  end)

  it("keeps a connection alive across requests and answers pipelined requests in order", function()
    helpers.run(function()
      local srv, addr = serve(function(req)
        if req.path == "/slow" then comm.sleep(0.1) end
        return 200, nil, req.path
      end)
      local c = assert(comm.connect(addr))
      -- the first request takes longest: its answer must still come first
      assert(c:write(raw.get("/slow") .. raw.get("/fast") .. raw.get("/third")))
      for _, want in ipairs{ "/slow", "/fast", "/third" } do
        local res = assert(raw.read_response(c, 5))
        assert.are.equal(200, res.status)
        assert.are.equal(want, res.body)
      end
      -- and the same connection serves again after a pause
      assert(c:write(raw.get("/again")))
      assert.are.equal("/again", assert(raw.read_response(c, 5)).body)
      c:close()
      srv:close()
    end)
  end)

  it("writes a reply larger than the socket buffers whole, then the next one, and closes after Connection: close", function()
    helpers.run(function()
      local big = string.rep("0123456789abcdef", 512 * 1024) -- 8 MiB: the first write cannot take it all
      local srv, addr = serve(function(req)
        if req.path == "/big" then return 200, nil, big end
        return 200, nil, req.path
      end)
      local c = assert(comm.connect(addr))
      assert(c:write(raw.get("/big") .. raw.get("/next") .. raw.get("/last", "Connection: close\r\n")))
      comm.sleep(0.05) -- the server writes what fits, then waits for this reader
      local res = assert(raw.read_response(c, 10))
      assert.are.equal(#big, #res.body)
      assert.is_true(res.body == big, "the big body arrived intact")
      assert.are.equal("/next", assert(raw.read_response(c, 5)).body)
      assert.are.equal("/last", assert(raw.read_response(c, 5)).body)
      local more, err = c:read(1, 5)
      assert.is_nil(more)
      assert.are.equal("closed", err)
      srv:close()
    end)
  end)

  it("drops the answer of a client that reset its connection meanwhile, and serves on", function()
    helpers.run(function()
      local client, answered
      local srv, _, base = serve(function(req)
        if req.path == "/slow" then
          answered = true
          assert(client:wait(10), "the resetting client did not exit")
          return 200, nil, "nobody reads this"
        end
        return 200, nil, req.path
      end)
      local _, port = srv:addr()
      -- linger 0: close sends a reset, so the answer meets a dead socket
      local py = helpers.writefile(helpers.tmpdir() .. "/reset.py", [[
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
time.sleep(0.2)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
]])
      client = helpers.spawn_host(nil, { argv = { "python3", py, tostring(port) }, env = { "LD_PRELOAD=" } })
      assert(helpers.wait_until(function() return answered end, 10), "the request never reached the handler")
      assert.are.equal(0, client:wait(10))
      assert(helpers.wait_until(function() return http.pending() == 0 end, 5), "the dropped answer stays pending")
      assert.are.equal("/after", assert(http.request(base .. "/after")).body)
      srv:close()
    end)
  end)

  it("dates HTTP/1.1 answers (RFC 1123, the current second) and leaves HTTP/1.0 ones undated, as evhttp does", function()
    helpers.run(function()
      local srv, addr = serve(function(req)
        if req.path == "/own" then return 200, { Date = "Thu, 01 Jan 1970 00:00:00 GMT" }, "own" end
        return 200, nil, "x"
      end)
      local c = assert(comm.connect(addr))
      local before = os.time()
      assert(c:write(raw.get("/")))
      local date = assert(raw.read_response(c, 5)).headers.date
      local after = os.time()
      local d, mon, y, h, mi, sec = date:match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
      assert.is_truthy(d, "bad Date: " .. date)
      local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
                       Nov = 11, Dec = 12 }
      local utc = { year = tonumber(y), month = months[mon], day = tonumber(d), hour = tonumber(h),
                    min = tonumber(mi), sec = tonumber(sec) }
      -- os.time reads a table as local time: the offset of the epoch's UTC reading is the zone's
      local t = os.time(utc) - os.time(os.date("!*t", 0))
      assert.is_true(t >= before - 1 and t <= after + 1, "Date " .. date .. " is not now")
      assert(c:write(raw.get("/own")))
      assert.are.equal("Thu, 01 Jan 1970 00:00:00 GMT", assert(raw.read_response(c, 5)).headers.date)
      c:close()
      local c10 = assert(comm.connect(addr))
      assert(c10:write("GET / HTTP/1.0\r\n\r\n"))
      local res = assert(raw.read_response(c10, 5))
      assert.are.equal(200, res.status)
      assert.is_nil(res.headers.date)
      c10:close()
      srv:close()
    end)
  end)

  it("answers HEAD with the headers of a GET and no body, so the next answer is not garbled", function()
    helpers.run(function()
      local srv, addr = serve(function() return 200, nil, "twelve bytes" end)
      local c = assert(comm.connect(addr))
      assert(c:write("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" .. raw.get("/next")))
      local head = {}
      while true do -- the status line and headers, no body
        local line = assert(c:readline(5))
        if line == "" then break end
        head[#head + 1] = line
      end
      assert.matches("^HTTP/1.1 200", head[1])
      assert.truthy(table.concat(head, "\n"):lower():find("content-length: 12", 1, true))
      local res = assert(raw.read_response(c, 5)) -- straight after: the GET's answer
      assert.are.equal("twelve bytes", res.body)
      c:close()
      srv:close()
    end)
  end)

  it("reads chunked request bodies", function()
    helpers.run(function()
      local srv, addr = serve(function(req) return 200, nil, "got:" .. req.body end)
      local c = assert(comm.connect(addr))
      assert(c:write("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                     "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"))
      local res = assert(raw.read_response(c, 5))
      assert.are.equal(200, res.status)
      assert.are.equal("got:hello, world", res.body)
      c:close()
      srv:close()
    end)
  end)

  it("answers 413 to a body over max_body, by Content-Length or chunked, and serves on", function()
    helpers.run(function()
      local srv, addr, base = serve(function(req) return 200, nil, #req.body .. "" end, { max_body = 100 })
      local res = assert(http.request{ method = "POST", url = base .. "/", body = ("x"):rep(101) })
      assert.are.equal(413, res.status)
      local c = assert(comm.connect(addr))
      assert(c:write("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                     "64\r\n" .. ("y"):rep(100) .. "\r\n1\r\nz\r\n0\r\n\r\n"))
      assert.are.equal(413, assert(raw.read_response(c, 5)).status)
      c:close()
      res = assert(http.request{ method = "POST", url = base .. "/", body = ("x"):rep(100) })
      assert.are.equal(200, res.status)
      assert.are.equal("100", res.body)
      srv:close()
    end)
  end)

  it("answers 400 and closes when the headers are over max_headers", function()
    helpers.run(function()
      local srv, addr, base = serve(function() return 200, nil, "ok" end, { max_headers = 1024 })
      local c = assert(comm.connect(addr))
      assert(c:write("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("a"):rep(4096) .. "\r\n\r\n"))
      local res = assert(raw.read_response(c, 5))
      assert.is_true(res.status == 400 or res.status == 431, "status " .. res.status)
      assert.is_nil(c:read(1, 5)) -- closed
      c:close()
      assert.are.equal("ok", assert(http.request(base .. "/")).body)
      srv:close()
    end)
  end)

  it("closes a connection whose request does not arrive within timeout", function()
    helpers.run(function()
      local srv, addr, base = serve(function() return 200, nil, "ok" end, { timeout = 0.3 })
      local c = assert(comm.connect(addr))
      assert(c:write("GET / HTTP/1.1\r\nHost: x\r\n")) -- never finished
      local data, err = c:read(1, 5)
      assert.is_nil(data)
      assert.are.equal("closed", err)
      c:close()
      assert.are.equal("ok", assert(http.request(base .. "/")).body)
      srv:close()
    end)
  end)

  it("answers 500 when the handler raises or returns nonsense, and goes on serving", function()
    helpers.run(function()
      local srv, _, base = serve(function(req)
        if req.path == "/raise" then error("handler broke") end
        if req.path == "/nonsense" then return { 1 } end
        if req.path == "/badheader" then return 200, { ["x-bad"] = "a\r\nInjected: yes" }, "" end
        return 200, nil, "fine"
      end)
      for _, p in ipairs{ "/raise", "/nonsense", "/badheader" } do
        local res = assert(http.request(base .. p))
        assert.are.equal(500, res.status, p)
        assert.is_nil(res.headers.injected)
      end
      assert.are.equal("fine", assert(http.request(base .. "/")).body)
      srv:close()
    end)
  end)

  it("answers 400 to garbage and closes", function()
    helpers.run(function()
      local srv, addr, base = serve(function() return 200, nil, "ok" end)
      local c = assert(comm.connect(addr))
      assert(c:write("\1\2\3 this is not http \0\255\r\n\r\n"))
      local res = assert(raw.read_response(c, 5))
      assert.are.equal(400, res.status)
      assert.is_nil(c:read(1, 5))
      c:close()
      assert.are.equal("ok", assert(http.request(base .. "/")).body)
      srv:close()
    end)
  end)

  it("lets a handler block on conn:recv, http.request and n:request", function()
    helpers.run(function()
      local echo_l = comm.serve("127.0.0.1:0", function(conn) conn:send("echo:" .. conn:recv(5)) end)
      local _, eport = echo_l:addr()
      local inner, _, inner_base = serve(function() comm.sleep(0.02); return 200, nil, "inner" end)
      local a = node.new{ name = "a", listen = "127.0.0.1:0", heartbeat = 0.1 }
      a:on("double", function(body) return body * 2 end)
      assert(a:start())
      local b = node.new{ name = "b", peers = { a.listen_addr }, heartbeat = 0.1 }
      assert(b:start())
      assert(helpers.wait_until(function() return (b:peers().a or {}).state == "up" end, 5))
      local srv, _, base = serve(function(req)
        if req.path == "/tcp" then
          local c = assert(comm.connect("127.0.0.1:" .. eport))
          c:send("hi")
          local r = c:recv(5)
          c:close()
          return 200, nil, r
        elseif req.path == "/http" then
          return 200, nil, "outer+" .. assert(http.request(inner_base .. "/")).body
        end
        return 200, nil, ("%d"):format(assert(b:request("a", "double", 21, { timeout = 2 })))
      end)
      -- concurrently: each request is its own task
      local tasks = {}
      for _, p in ipairs{ "/tcp", "/http", "/node" } do
        tasks[p] = comm.spawn(function() return assert(http.request(base .. p)).body end)
      end
      assert.are.same({ true, "echo:hi" }, { tasks["/tcp"]:join(5) })
      assert.are.same({ true, "outer+inner" }, { tasks["/http"]:join(5) })
      assert.are.same({ true, "42" }, { tasks["/node"]:join(5) })
      a:stop(); b:stop(); srv:close(); inner:close(); echo_l:close()
    end)
  end)

  it("reuses an idle request task for the next request, and still runs concurrent requests apart", function()
    helpers.run(function()
      local gate = comm.channel()
      local srv, _, base = serve(function(req)
        if req.path == "/wait" then gate:get(5) end
        return 200, nil, req.path
      end)
      assert(http.request(base .. "/"))
      local before = comm.stats().tasks_spawned
      for _ = 1, 20 do assert(http.request(base .. "/")) end
      assert.is_true(comm.stats().tasks_spawned - before <= 1, "a task per request")
      -- one handler blocked: another request is answered meanwhile
      local slow = comm.spawn(function() return http.request(base .. "/wait") end)
      assert.are.equal("/quick", assert(http.request(base .. "/quick")).body)
      assert.are.equal("waiting", slow:status())
      gate:put(true)
      local ok, res = slow:join(5)
      assert.is_true(ok)
      assert.are.equal("/wait", res.body)
      srv:close()
      -- closing the server ends its idle tasks
      assert(helpers.wait_until(function() return comm.stats().tasks <= 2 end, 2))
    end)
  end)

  it("serves and fetches over IPv6", function()
    if not helpers.has_ipv6(comm.listen) then
      pending(helpers.NO_IPV6)
      return
    end
    helpers.run(function()
      local srv = assert(http.serve("[::1]:0", echo))
      local _, port = srv:addr()
      local res = assert(http.request("http://[::1]:" .. port .. "/six?x=6"))
      local got = comm.json.decode(res.body)
      assert.are.equal("/six", got.path)
      assert.matches("^%[::1%]:%d+$", got.peer)
      srv:close()
    end)
  end)

  it("returns nil, err from serve on an address in use", function()
    helpers.run(function()
      local srv, addr = serve(function() return 200 end)
      local again, err = http.serve(addr, function() return 200 end)
      assert.is_nil(again)
      assert.are.equal("address in use", err)
      srv:close()
      srv:close() -- idempotent
      assert.has_error(function() srv:addr() end, "attempt to use a closed HTTP server")
    end)
  end)
end)

describe("http.request failures", function()
  it("returns nil, err on every network failure and never raises", function()
    helpers.run(function()
      local port = helpers.free_port()
      assert.are.same({ nil, "connection refused" }, { http.request("http://127.0.0.1:" .. port .. "/") })
      local srv, _, base = serve(function() comm.sleep(1); return 200 end)
      assert.are.same({ nil, "timeout" }, { http.request{ url = base .. "/", timeout = 0.1 } })
      srv:close()
      -- a server that accepts and hangs up without a word
      local l = comm.serve("127.0.0.1:0", function(conn) conn:read(10, 1) end)
      local _, lport = l:addr()
      local res, err = http.request("http://127.0.0.1:" .. lport .. "/")
      assert.is_nil(res)
      assert.is_string(err)
      l:close()
      -- a server that answers garbage
      local g = comm.serve("127.0.0.1:0", function(conn) conn:readline(1); conn:write("SPAM\r\n\r\n") end)
      local _, gport = g:addr()
      res, err = http.request("http://127.0.0.1:" .. gport .. "/")
      assert.is_nil(res)
      assert.is_string(err)
      g:close()
      -- an answer over the client's max_body
      local big = assert(http.serve("127.0.0.1:0", function() return 200, nil, ("z"):rep(5000) end))
      local _, bport = big:addr()
      assert.are.same({ nil, "response too large" },
                      { http.request{ url = "http://127.0.0.1:" .. bport .. "/", max_body = 1000 } })
      assert.are.equal(5000, #assert(http.request("http://127.0.0.1:" .. bport .. "/")).body)
      big:close()
      res, err = http.request("http://no-such-host.invalid:80/")
      assert.is_nil(res)
      assert.is_string(err)
      assert.are.same({ nil, "bad url: not a url" }, { http.request("not a url") })
    end)
  end)

  it("does not follow redirects unless asked, and follows them when asked", function()
    helpers.run(function()
      local srv, _, base = serve(function(req)
        if req.path == "/old" then return 302, { location = "/new?x=1" }, "moved" end
        if req.path == "/loop" then return 301, { location = "/loop" }, "" end
        return 200, nil, "new " .. (req.query.x or "")
      end)
      local res = assert(http.request(base .. "/old"))
      assert.are.equal(302, res.status)
      assert.are.equal("/new?x=1", res.headers.location)
      res = assert(http.request{ url = base .. "/old", follow = true })
      assert.are.equal(200, res.status)
      assert.are.equal("new 1", res.body)
      res = assert(http.request{ url = base .. "/loop", follow = 3 })
      assert.are.equal(301, res.status) -- gave up after 3 hops, with the last answer
      srv:close()
    end)
  end)

  it("raises on programming errors only", function()
    assert.has_error(function() http.request(42) end)
    assert.has_error(function() http.request{ url = "http://x/", body = {} } end)
    assert.has_error(function() http.serve("127.0.0.1:0", "not a function") end)
  end)
end)
