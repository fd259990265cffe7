-- Turns bench/node_rr.lua's lines (stdin) into the markdown section that
-- `make bench` appends to bench/RESULTS.md, with the node issue's targets.
local rows = {}
for line in io.lines() do
  local kv = {}
  for k, v in line:gmatch("(%S+)=(%S+)") do kv[k] = v end
  if line:match("^node_rr raw inflight=1 ") then rows.raw = kv
  elseif line:match("^node_rr raw inflight=") then rows.piped = kv
  elseif line:match("^node_rr inflight=1 ") then rows.one = kv
  elseif line:match("^node_rr inflight=64 ") then rows.many = kv
  elseif line:match("^node_detect signal=KILL") then rows.kill = kv
  elseif line:match("^node_detect signal=STOP") then rows.stop = kv end
end
local function need(r, what) if not r then error("bench/node_rr.lua gave no " .. what .. " line", 0) end return r end
local raw, one, many = need(rows.raw, "raw"), need(rows.one, "inflight=1"), need(rows.many, "inflight=64")
local ratio = tonumber(one.reqs_per_s) / tonumber(raw.frames_per_s)
local function verdict(ok) return ok and "met" or "**missed**" end
print("\n## Node request/reply (two luacomm nodes on loopback, `bench/node_rr.lua`)\n")
print("| measure | result | target | |")
print("|---|--:|--:|---|")
print(("| raw frame ping-pong, same processes | %s frames/s | | |"):format(raw.frames_per_s))
print(("| request/reply, 1 in flight | %s req/s (%.2f of raw) | ≥ 0.75 of raw | %s |")
  :format(one.reqs_per_s, ratio, verdict(ratio >= 0.75)))
if rows.piped then
  print(("| raw frames, %s in flight on one connection, same processes | %s frames/s | | |")
    :format(rows.piped.inflight, rows.piped.frames_per_s))
end
print(("| request/reply, 64 in flight, one link | %s req/s%s | ≥ 150,000 | %s |")
  :format(many.reqs_per_s,
          rows.piped and (" (%.2f of raw)"):format(tonumber(many.reqs_per_s) / tonumber(rows.piped.frames_per_s)) or "",
          verdict(tonumber(many.reqs_per_s) >= 150000)))
if rows.kill then
  print(("| peer down after SIGKILL (heartbeat %s, timeout %s) | mean %s s, max %s s | ≤ timeout + heartbeat | |")
    :format(rows.kill.heartbeat, rows.kill.timeout, rows.kill.mean_s, rows.kill.max_s))
end
if rows.stop then
  print(("| peer down after SIGSTOP (silence) | mean %s s, max %s s | ≤ timeout + heartbeat | |")
    :format(rows.stop.mean_s, rows.stop.max_s))
end
