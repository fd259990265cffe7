-- Scale measurements for docs/SCALING.md: N nodes of luacomm.node in this
-- one process (stock lua5.4, real TCP over loopback), a partial mesh where
-- node i dials node i+1 (a ring, so the mesh is connected) and DIAL-1
-- other nodes picked at random (seeded: the same mesh every run).
--
--   lua5.4 bench/scale.lua [N=100] [DIAL=3] [HEARTBEAT=0.5] [IDLE=10]
--
-- Prints one JSON object: convergence time (every node routes to every
-- other), the routing work per topology change (announcements handled,
-- route recomputations and their cost), idle CPU and memory per node, and
-- heartbeat and link-state traffic per node per second.
package.path = "scripts/?.lua;scripts/?/init.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath
local comm = require "luacomm"
local node = require "luacomm.node"
local routes = require "luacomm.node.routes"

local N = tonumber(arg[1]) or 100
local DIAL = tonumber(arg[2]) or 3
local HB = tonumber(arg[3]) or 0.5
local IDLE = tonumber(arg[4]) or 10

-- Instrument the routing table (bench only): announcements applied and
-- route recomputations, with the CPU they took.
local R = getmetatable(routes.new("x")).__index
local work = { updates = 0, accepted = 0, recomputes = 0, recompute_cpu = 0 }
local update, recompute = R.update, R._recompute
function R.update(...)
  work.updates = work.updates + 1
  local ok = update(...)
  if ok then work.accepted = work.accepted + 1 end
  return ok
end
function R._recompute(...)
  local t = os.clock()
  recompute(...)
  work.recomputes = work.recomputes + 1
  work.recompute_cpu = work.recompute_cpu + (os.clock() - t)
end
local function snapshot()
  local s = {}
  for k, v in pairs(work) do s[k] = v end
  return s
end

local function rss_kib()
  local f = io.open("/proc/self/status")
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- why links went down, from the nodes' info log
local reasons = {}
local quiet = {
  debug = function() end, warn = function() end, error = comm.log.error,
  info = function(fmt, ...)
    if fmt:find("down", 1, true) then
      local why = tostring(select(3, ...)):gsub("[%d.]+ s", "N s")
      reasons[why] = (reasons[why] or 0) + 1
    end
  end,
}

comm.run(function()
  math.randomseed(42)
  -- ports: all bound at once (so all differ), then released (loopback only);
  -- every node listens before any dials (start() does not yield)
  local ports, held = {}, {}
  for i = 1, N do
    held[i] = assert(comm.listen("127.0.0.1:0"))
    ports[i] = select(2, held[i]:addr())
  end
  for _, l in ipairs(held) do l:close() end
  local rss0 = rss_kib()
  local nodes = {}
  for i = 1, N do
    local dial, seen = { i % N + 1 }, { [i] = true, [i % N + 1] = true }
    while #dial < DIAL and #dial < N - 1 do
      local j = math.random(N)
      if not seen[j] then
        seen[j] = true
        dial[#dial + 1] = j
      end
    end
    local peers = {}
    for k, j in ipairs(dial) do peers[k] = "127.0.0.1:" .. ports[j] end
    nodes[i] = node.new{ name = "n" .. i, listen = "127.0.0.1:" .. ports[i], peers = peers, heartbeat = HB,
                         timeout = 4 * HB, log = quiet, reconnect = { min = 0.05, max = 1 } }
  end
  local t0, c0 = comm.now(), os.clock()
  for i = 1, N do assert(nodes[i]:start()) end
  local function converged(except)
    for i, n in ipairs(nodes) do
      if i ~= except then
        local k = 0
        for name in pairs(n:routes()) do
          if name ~= "n" .. (except or 0) then k = k + 1 end
        end
        if k < N - 1 - (except and 1 or 0) then return false end
      end
    end
    return true
  end
  while not converged() do comm.sleep(0.05) end
  local conv_t, conv_cpu = comm.now() - t0, os.clock() - c0
  -- path lengths: the mean and the longest route, over every node
  local hop_sum, hop_n, hop_max = 0, 0, 0
  for _, n in ipairs(nodes) do
    for _, r in pairs(n:routes()) do
      hop_sum, hop_n, hop_max = hop_sum + r.hops, hop_n + 1, math.max(hop_max, r.hops)
    end
  end
  local w_conv = snapshot()
  local links = 0
  for _, n in ipairs(nodes) do links = links + n:stats().links end

  -- idle: nothing but heartbeats
  comm.sleep(1)
  local s0, cpu0, w0 = comm.stats(), os.clock(), snapshot()
  comm.sleep(IDLE)
  local s1, cpu1, w1 = comm.stats(), os.clock(), snapshot()
  local rss = rss_kib()

  -- one topology change: node 1 leaves; every other node drops it
  local w2, t2 = snapshot(), comm.now()
  nodes[1]:stop()
  local gone
  repeat
    comm.sleep(0.02)
    gone = true
    for i = 2, N do
      if nodes[i]:routes()["n1"] then gone = false; break end
    end
  until gone
  local change_t = comm.now() - t2
  comm.sleep(0.5)
  local w3 = snapshot()
  for i = 2, N do nodes[i]:stop() end

  local function per(a, b, k) return (b[k] - a[k]) end
  local downs = 0
  for _, n in ipairs(nodes) do downs = downs + n:stats().links_down end
  print(comm.json.encode{
    nodes = N, dial = DIAL, links_down_total = downs, down_reasons = reasons, heartbeat = HB, links = links / 2,
    convergence_s = conv_t, hops_mean = hop_sum / hop_n, hops_max = hop_max, convergence_cpu_s = conv_cpu,
    convergence_announcements_handled = w_conv.updates, convergence_recomputes = w_conv.recomputes,
    idle_cpu_percent_per_node = 100 * (cpu1 - cpu0) / IDLE / N,
    idle_rss_kib_per_node = (rss - rss0) / N, rss_kib_process = rss,
    idle_frames_out_per_node_s = per(s0, s1, "frames_out") / IDLE / N,
    idle_bytes_out_per_node_s = per(s0, s1, "bytes_out") / IDLE / N,
    idle_announcements = per(w0, w1, "updates"),
    change_s = change_t,
    change_announcements_handled_per_node = per(w2, w3, "updates") / (N - 1),
    change_accepted_per_node = per(w2, w3, "accepted") / (N - 1),
    change_recomputes_per_node = per(w2, w3, "recomputes") / (N - 1),
    recompute_ms_avg = 1e3 * w3.recompute_cpu / math.max(1, w3.recomputes),
  })
end)
