-- Request/reply rate between two luacomm nodes on loopback, the raw frame
-- ping-pong rate of the same processes for comparison, and the time the
-- node library takes to report a dead or frozen peer down.
--
--   lua5.4 bench/node_rr.lua [SECONDS per phase, default 3] [INFLIGHT, default 64] [RUNS, default 3]
--
-- The server is a real `build/luacomm` process (node "srv": an "echo"
-- handler, plus a raw frame echo listener); this process is node "cli".
-- Prints one machine-readable line per phase:
--   node_rr raw inflight=1 frames=N frames_per_s=R
--   node_rr raw inflight=64 frames=N frames_per_s=R   (one connection, pipelined)
--   node_rr inflight=1 reqs=N reqs_per_s=R ratio_to_raw=X
--   node_rr inflight=64 reqs=N reqs_per_s=R
--   node_detect signal=KILL heartbeat=0.2 timeout=1.0 runs=N mean_s=S max_s=S
--   node_detect signal=STOP heartbeat=0.2 timeout=1.0 runs=N mean_s=S max_s=S
-- (SIGKILL closes the victim's sockets, so the peer sees the connection
-- end; SIGSTOP leaves them open, so only the heartbeat silence tells.)
-- This process collects garbage as the luacomm host runs every script
-- (generational mode), so that both nodes are luacomm nodes alike.
collectgarbage("generational")
package.path = "scripts/?.lua;scripts/?/init.lua;spec/?.lua;tools/?.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath

local comm = require "luacomm"
local node = require "luacomm.node"
local helpers = require "helpers"

local SECONDS = tonumber(arg[1]) or 3
local INFLIGHT = math.tointeger(tonumber(arg[2])) or 64
local RUNS = math.tointeger(tonumber(arg[3])) or 3
local HEARTBEAT, TIMEOUT = 0.2, 1.0

local SERVER = [[
local comm = require "luacomm"
local node = require "luacomm.node"
local port, raw = ...
comm.serve("127.0.0.1:" .. raw, function(c)
  while true do
    local f = c:recv()
    if not f then return end
    c:send(f)
  end
end)
local n = node.new{ name = "srv", listen = "127.0.0.1:" .. port, heartbeat = 1, timeout = 5 }
n:on("echo", function(body) return body end)
assert(n:start())
print("ready")
]]

-- A node that only dials the bench's node, to be killed or frozen.
local VICTIM = [[
local node = require "luacomm.node"
local peer, hb, to = ...
local n = node.new{ name = "victim", peers = { peer }, heartbeat = tonumber(hb), timeout = tonumber(to) }
n:on_peer(function(name, state) print(state .. " " .. name) end)
assert(n:start())
]]

local quiet = { debug = function() end, info = function() end, warn = comm.log.warn, error = comm.log.error }

local function line(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

-- Runs `workers` tasks calling once() until the phase ends; the count.
local function phase(workers, once)
  local stop_at = comm.now() + SECONDS
  local done, tasks = 0, {}
  for i = 1, workers do
    tasks[i] = comm.spawn(function()
      while comm.now() < stop_at do
        once()
        done = done + 1
      end
    end)
  end
  for _, t in ipairs(tasks) do assert(t:join()) end
  return done
end

-- Seconds from `signal` to the watcher's on_peer "down", once per run.
local function detect(signal)
  local watch = node.new{ name = "watch", listen = "127.0.0.1:0", heartbeat = HEARTBEAT, timeout = TIMEOUT,
                          log = quiet }
  local downs = comm.channel()
  watch:on_peer(function(name, state)
    if name == "victim" and state == "down" then downs:put(comm.now()) end
  end)
  assert(watch:start())
  local took = {}
  for i = 1, RUNS do
    local v = helpers.spawn_host({ "-e", VICTIM, watch.listen_addr, tostring(HEARTBEAT), tostring(TIMEOUT) })
    assert(helpers.wait_until(function() return (watch:peers().victim or {}).state == "up" end, 10),
           "victim did not come up: " .. v:stderr())
    local t0 = comm.now()
    v:signal(signal)
    local t1 = assert(downs:get(TIMEOUT * 5), "victim never reported down")
    took[i] = t1 - t0
    v:signal("CONT")
    v:signal("KILL")
    v:wait(5)
  end
  watch:stop()
  local sum, max = 0, 0
  for _, t in ipairs(took) do sum, max = sum + t, math.max(max, t) end
  line("node_detect signal=%s heartbeat=%g timeout=%g runs=%d mean_s=%.3f max_s=%.3f",
       signal, HEARTBEAT, TIMEOUT, RUNS, sum / RUNS, max)
end

-- Raw frames over one connection with `inflight` of them outstanding (a
-- writer task, and this one reading): what the transport of the same
-- processes carries, the floor under request/reply with as many in flight.
local function raw_window(c, inflight, payload)
  local tokens, sent, got = comm.channel(), 0, 0
  for _ = 1, inflight do tokens:put(true) end
  local stop_at = comm.now() + SECONDS
  local writer = comm.spawn(function()
    while comm.now() < stop_at do
      tokens:get()
      assert(c:send(payload))
      sent = sent + 1
    end
  end)
  while comm.now() < stop_at or got < sent do
    assert(c:recv(5))
    got = got + 1
    tokens:put(true)
  end
  assert(writer:join())
  return got
end

local port, raw = helpers.free_port(), helpers.free_port()
local srv = helpers.spawn_host({ "-e", SERVER, tostring(port), tostring(raw) })
local ok, err = pcall(comm.run, function()
  assert(srv:wait_output("ready", "out", 10), "server did not start: " .. srv:stderr())
  local n = node.new{ name = "cli", peers = { "127.0.0.1:" .. port }, heartbeat = 1, timeout = 5, log = quiet }
  assert(n:start())
  assert(helpers.wait_until(function() return (n:peers().srv or {}).state == "up" end, 5))
  local c = assert(comm.connect("127.0.0.1:" .. raw))
  local payload = string.rep("x", 32)
  local frames = phase(1, function()
    assert(c:send(payload))
    assert(c:recv(5))
  end)
  local raw_rate = frames / SECONDS
  line("node_rr raw inflight=1 frames=%d frames_per_s=%.0f", frames, raw_rate)
  local piped = raw_window(c, INFLIGHT, payload)
  line("node_rr raw inflight=%d frames=%d frames_per_s=%.0f", INFLIGHT, piped, piped / SECONDS)
  c:close()
  local function once() assert(n:request("srv", "echo", payload, { timeout = 5 })) end
  local reqs = phase(1, once)
  line("node_rr inflight=1 reqs=%d reqs_per_s=%.0f ratio_to_raw=%.2f", reqs, reqs / SECONDS,
       reqs / SECONDS / raw_rate)
  reqs = phase(INFLIGHT, once)
  line("node_rr inflight=%d reqs=%d reqs_per_s=%.0f", INFLIGHT, reqs, reqs / SECONDS)
  n:stop()
  srv:kill()
  if RUNS > 0 then
    detect("KILL")
    detect("STOP")
  end
end)
srv:kill()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
