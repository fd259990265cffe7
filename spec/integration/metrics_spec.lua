-- comm.metrics and `luacomm --metrics` (CONTRACT §9): a real host process,
-- scraped over loopback; the page passes promtool; /health turns 503 when a
-- graceful stop begins and the listener stays until the process exits.
local comm = require "luacomm"
local http = require "luacomm.http"
local helpers = require "helpers"

local FIX = "spec/fixtures/http/metrics_node.lua"

-- promtool's verdict on an exposition: exit status and what it printed.
local function promtool(text)
  local dir = helpers.tmpdir()
  helpers.writefile(dir .. "/metrics.txt", text)
  local p = io.popen("env -u LD_PRELOAD promtool check metrics < " .. helpers.shquote(dir .. "/metrics.txt") .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return tonumber(out:match("rc=(%d+)")), out:gsub("rc=%d+%s*$", "")
end

-- A literal line (or part) of the page.
local function has(body, s)
  assert.truthy(body:find(s, 1, true), "not in the page: " .. s)
end

local function get(base, path)
  local res, err = http.request{ url = base .. path, timeout = 5 }
  assert(res, err)
  return res
end

describe("luacomm --metrics", function()
  it("serves /metrics that promtool accepts, /peers and /health, and 503 once a stop began", function()
    helpers.run(function()
      local port = helpers.free_port()
      local base = "http://127.0.0.1:" .. port
      local p = helpers.spawn_host{ "--metrics", "127.0.0.1:" .. port, FIX }
      local ok, err = pcall(function()
        assert(p:wait_output("ready\n", "out", 15), p:stderr())
        local res = get(base, "/metrics")
        assert.are.equal(200, res.status)
        assert.are.equal("text/plain; version=0.0.4; charset=utf-8", res.headers["content-type"])
        local body = res.body
        local rc, out = promtool(body)
        assert.are.equal(0, rc, out)
        assert.are.equal("", out)
        -- process counters and gauges, named as the contract says
        for _, line in ipairs{ "# TYPE luacomm_tasks gauge", "# TYPE luacomm_conns gauge",
                               "# TYPE luacomm_frames_in_total counter", "# TYPE luacomm_reloads_total counter",
                               "# TYPE luacomm_task_errors_total counter", "# HELP luacomm_bytes_out_total ",
                               "# TYPE luacomm_buffered_in gauge", "# TYPE luacomm_refused_total counter",
                               "# TYPE luacomm_idle_closed_total counter" } do
          assert.truthy(body:find(line, 1, true), line)
        end
        -- every comm.stats() key is there
        for _, k in ipairs{ "tasks", "timers", "conns", "listeners", "frames_in", "frames_out", "bytes_in",
                            "bytes_out", "reloads", "reload_failures", "task_errors" } do
          assert.truthy(body:match("\nluacomm_" .. k .. "_total %d+\n") or body:match("\nluacomm_" .. k .. " %d+\n"), k)
        end
        -- node counters per started node; a stopped node is gone
        has(body, '\nluacomm_node_requests_total{node="b"} 1\n')
        has(body, '\nluacomm_node_served_total{node="a"} 1\n')
        assert.is_nil(body:find('{node="c"', 1, true))
        -- peers: up with an RTT, and a peer reported down listed with 0
        has(body, '\nluacomm_peer_up{node="a",peer="b"} 1\n')
        has(body, '\nluacomm_peer_up{node="a",peer="c"} 0\n')
        assert.matches('\nluacomm_peer_rtt_seconds{node="b",peer="a"} [%d.e-]+\n', body)
        -- the script's own metrics
        has(body, '\nfixture_hits_total{route="/b"} 2\n')
        has(body, "\nfixture_temperature 21.5\n")
        has(body, '\nfixture_latency_seconds_bucket{le="0.1"} 1\n')
        has(body, '\nfixture_latency_seconds_bucket{le="+Inf"} 2\n')
        has(body, "\nfixture_latency_seconds_count 2\n")
        -- /peers: the first node's n:peers() as JSON; ?node= picks another
        local peers = assert(comm.json.decode(get(base, "/peers").body))
        assert.are.equal("up", peers.b.state)
        assert.are.equal("down", peers.c.state)
        peers = assert(comm.json.decode(get(base, "/peers?node=b").body))
        assert.are.equal("up", peers.a.state)
        assert.are.equal(404, get(base, "/peers?node=nope").status)
        assert.matches("<table", get(base, "/peers?format=html").body)
        assert.are.equal(404, get(base, "/nothing").status)
        res = get(base, "/health")
        assert.are.equal(200, res.status)
        assert.are.equal("ok\n", res.body)
        -- a graceful stop: the stop hook runs for 1.5 s; /health says 503 meanwhile
        p:signal("TERM")
        assert(p:wait_output("stopping\n", "out", 5))
        res = get(base, "/health")
        assert.are.equal(503, res.status)
        assert.are.equal(0, p:wait(10))
        helpers.assert_no_error_log(p:stderr())
        -- and then nothing listens there any more
        local gone, why = http.request{ url = base .. "/health", timeout = 2 }
        assert.is_nil(gone)
        assert.are.equal("connection refused", why)
      end)
      p:kill()
      if not ok then error(err, 0) end
    end, 60)
  end)

  it("does not keep a finished script alive, and a bad address is a startup error", function()
    local status, _, err = helpers.run_host{ "--metrics", "127.0.0.1:0", "-e", "print('done')" }
    assert.are.equal(0, status, err)
    local port = helpers.free_port()
    local hold = assert(comm.listen("127.0.0.1:" .. port))
    status, _, err = helpers.run_host{ "--metrics", "127.0.0.1:" .. port, "-e", "print('never')" }
    hold:close()
    assert.are.equal(1, status)
    assert.matches("%-%-metrics 127%.0%.0%.1:%d+: address in use", err)
    status = helpers.run_host{ "--metrics" }
    assert.are.equal(2, status)
  end)
end)

describe("comm.metrics", function()
  it("exposes user counters, gauges and histograms with labels, escaped, and promtool accepts it", function()
    helpers.run(function()
      local m = comm.metrics
      local c = m.counter("spec_events", "events with \\ and \nnewline", { "kind", "zone" })
      c:inc({ "a", "z1" })
      c:inc(5, { 'quote"back\\slash\nnl', "z2" })
      assert.are.equal(c, m.counter("spec_events_total", "again")) -- same metric
      assert.has_error(function() m.gauge("spec_events_total", "clash") end)
      assert.has_error(function() c:inc(-1, { "a", "z1" }) end)
      assert.has_error(function() c:inc({ "only one" }) end)
      assert.has_error(function() m.counter("bad name", "x") end)
      assert.has_error(function() m.gauge("luacomm_tasks", "taken by the runtime") end)
      local g = m.gauge("spec_level", "a level")
      g:set(3); g:inc(2); g:dec()
      local h = m.histogram("spec_size_bytes", "sizes", { 10, 100 }, { "op" })
      h:observe(5, { "get" }); h:observe(50, { "get" }); h:observe(500, { "get" })
      local srv = assert(m.serve("127.0.0.1:0"))
      local _, port = srv:addr()
      local body = get("http://127.0.0.1:" .. port, "/metrics").body
      srv:close()
      local rc, out = promtool(body)
      assert.are.equal(0, rc, out)
      has(body, '\nspec_events_total{kind="a",zone="z1"} 1\n')
      assert.truthy(body:find('\nspec_events_total{kind="quote\\"back\\\\slash\\nnl",zone="z2"} 5\n', 1, true))
      assert.truthy(body:find("# HELP spec_events_total events with \\\\ and \\nnewline\n", 1, true))
      assert.truthy(body:find("\nspec_level 4\n", 1, true))
      assert.truthy(body:find('\nspec_size_bytes_bucket{op="get",le="10"} 1\n', 1, true))
      assert.truthy(body:find('\nspec_size_bytes_bucket{op="get",le="100"} 2\n', 1, true))
      assert.truthy(body:find('\nspec_size_bytes_bucket{op="get",le="+Inf"} 3\n', 1, true))
      assert.truthy(body:find('\nspec_size_bytes_sum{op="get"} 555\n', 1, true))
    end)
  end)
end)
