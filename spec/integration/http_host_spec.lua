-- luacomm.http inside the luacomm command: a handler's error is logged and
-- the server serves on; a graceful stop answers the requests being handled
-- before the process exits.
local comm = require "luacomm"
local http = require "luacomm.http"
local helpers = require "helpers"

describe("http in the luacomm host", function()
  it("logs a handler's error, serves on, and answers in-flight requests during a graceful stop", function()
    helpers.run(function()
      local p = helpers.spawn_host{ "spec/fixtures/http/slow_service.lua" }
      local ok, err = pcall(function()
        local port = assert(p:wait_output("port (%d+)\n", "out", 10), p:stderr())
        local base = "http://127.0.0.1:" .. port
        local res = assert(http.request(base .. "/raise"))
        assert.are.equal(500, res.status)
        assert(p:wait_output("%[error%] http: GET /raise: [^\n]*handler exploded", "err", 5))
        assert.are.equal("quick", assert(http.request(base .. "/")).body)
        -- a slow request in flight when SIGTERM comes is still answered
        local slow = comm.spawn(function() return http.request{ url = base .. "/slow", timeout = 5 } end)
        comm.sleep(0.1)
        p:signal("TERM")
        local joined, r = slow:join(10)
        assert(joined, r)
        assert(r, "no answer")
        assert.are.equal(200, r.status)
        assert.are.equal("slow done", r.body)
        assert.are.equal(0, p:wait(10))
        -- and nothing listens any more
        local gone, why = http.request{ url = base .. "/", timeout = 2 }
        assert.is_nil(gone)
        assert.are.equal("connection refused", why)
      end)
      p:kill()
      if not ok then error(err, 0) end
    end, 40)
  end)
end)
