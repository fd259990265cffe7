-- Instructions per node request, counted by callgrind (stable where the
-- wall-clock rates of bench/node_rr.lua are not, on a shared machine).
--
--   lua5.4 bench/node_cg.lua [COUNT, default 20000] [INFLIGHT, default 64]
--
-- Starts the server node of bench/node_rr.lua (an "echo" handler) under
-- valgrind --tool=callgrind, warms the link up, zeroes the counters, sends
-- COUNT requests with INFLIGHT in flight, dumps, and prints
--   node_cg inflight=K reqs=N server_ir=TOTAL server_ir_per_req=X
-- The client's own count comes from running this script itself under
-- callgrind twice with two COUNTs and taking the difference
-- (bench/node_cg.sh does both, and counts system calls with strace).
package.path = "scripts/?.lua;scripts/?/init.lua;spec/?.lua;tools/?.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath

-- The client collects as bench/node_rr.lua's does (NODE_CG_GC=incremental
-- for Lua's default).
collectgarbage(os.getenv("NODE_CG_GC") or "generational")
local comm = require "luacomm"
local node = require "luacomm.node"
local helpers = require "helpers"

local COUNT = math.tointeger(tonumber(arg[1])) or 20000
local INFLIGHT = math.tointeger(tonumber(arg[2])) or 64
local SERVER_CG = os.getenv("NODE_CG_SERVER") ~= "0"
-- NODE_CG_STRACE=1: no callgrind; strace -c counts the syscalls of both
-- processes during the measured requests instead.
local STRACE = os.getenv("NODE_CG_STRACE") == "1"
if STRACE then SERVER_CG = false end

local SERVER = [[
local node = require "luacomm.node"
local port = ...
local n = node.new{ name = "srv", listen = "127.0.0.1:" .. port, heartbeat = 1, timeout = 30 }
n:on("echo", function(body) return body end)
assert(n:start())
print("ready")
]]

local quiet = { debug = function() end, info = function() end, warn = comm.log.warn, error = comm.log.error }
local dir = helpers.tmpdir()
local port = helpers.free_port()
local argv = { helpers.BIN, "-e", SERVER, tostring(port) }
if os.getenv("NODE_CG_BUDGET") then table.insert(argv, 2, "--task-budget=" .. os.getenv("NODE_CG_BUDGET")) end
if SERVER_CG then
  argv = { "valgrind", "-q", "--tool=callgrind", "--callgrind-out-file=" .. dir .. "/cg.%p", table.unpack(argv) }
end
local srv = helpers.spawn_host({}, { argv = argv })

-- `count` requests, `inflight` of them at a time.
local function drive(n, count, inflight)
  local left, payload = count, string.rep("x", 32)
  local tasks = {}
  for i = 1, inflight do
    tasks[i] = comm.spawn(function()
      while left > 0 do
        left = left - 1
        assert(n:request("srv", "echo", payload, { timeout = 60 }))
      end
    end)
  end
  for _, t in ipairs(tasks) do assert(t:join()) end
end

local function total_ir(file)
  for l in io.lines(file) do
    local ir = l:match("^summary: (%d+)") or l:match("^totals: (%d+)")
    if ir then return tonumber(ir) end
  end
end

local ok, err = pcall(comm.run, function()
  assert(srv:wait_output("ready", "out", 60), "server did not start: " .. srv:stderr())
  local n = node.new{ name = "cli", peers = { "127.0.0.1:" .. port }, heartbeat = 1, timeout = 30, log = quiet }
  assert(n:start())
  assert(helpers.wait_until(function() return (n:peers().srv or {}).state == "up" end, 60))
  drive(n, 500, INFLIGHT)
  if SERVER_CG then assert(os.execute("callgrind_control -z " .. srv.pid .. " >/dev/null")) end
  if STRACE then
    -- $PPID of the shell os.execute runs is this process
    os.execute(("strace -c -f -o %s/srv.st -p %d 2>/dev/null & echo $! > %s/st1; "
                .. "strace -c -f -o %s/cli.st -p $PPID 2>/dev/null & echo $! > %s/st2; sleep 1")
      :format(dir, srv.pid, dir, dir, dir))
  end
  drive(n, COUNT, INFLIGHT)
  if STRACE then
    os.execute(("kill -INT $(cat %s/st1) $(cat %s/st2); sleep 1"):format(dir, dir))
    for _, who in ipairs{ "srv", "cli" } do
      local f = io.open(dir .. "/" .. who .. ".st")
      local text = f and f:read("a") or ""
      if f then f:close() end
      local total = text:match("\n%s*100%.00%s+%S+%s+%S+%s+(%d+)")
      io.stdout:write(("node_strace %s inflight=%d reqs=%d syscalls=%s per_req=%.2f\n")
        :format(who, INFLIGHT, COUNT, total or "?", (tonumber(total) or 0) / COUNT))
      if os.getenv("VERBOSE") then io.stdout:write(text) end
    end
  end
  if SERVER_CG then
    assert(os.execute("callgrind_control -d " .. srv.pid .. " >/dev/null"))
    local files = {}
    for f in io.popen("ls -v " .. dir .. "/cg." .. srv.pid .. ".* 2>/dev/null"):lines() do files[#files + 1] = f end
    local ir = total_ir(files[#files])
    io.stdout:write(("node_cg inflight=%d reqs=%d server_ir=%d server_ir_per_req=%.0f\n")
      :format(INFLIGHT, COUNT, ir, ir / COUNT))
    local keep = os.getenv("KEEP")
    if keep then os.execute(("mkdir -p %s && cp %s %s/server.out"):format(keep, files[#files], keep)) end
  end
  n:stop()
end)
srv:kill()
os.execute("rm -rf " .. dir)
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
