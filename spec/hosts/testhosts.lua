-- Test hosts for the multi-host specs: Linux network namespaces made by
-- tools/hosts.sh, each with its own address on 10.77.0.0/24, joined by a
-- bridge in a namespace of their own. Every traffic of these specs goes to
-- those addresses only (or to unix sockets in a temporary folder, for the
-- spec's own control of its probe node).
local helpers = require "helpers"

local T = {}

local SH = helpers.ROOT .. "/tools/hosts.sh"
local q = helpers.shquote

-- true, or false and the reason this machine cannot make test hosts.
function T.available()
  local p = io.popen(q(SH) .. " check 2>&1")
  local why = p:read("a")
  local ok = p:close()
  if ok then return true end
  return false, (why:gsub("%s+$", ""))
end

local function pid()
  local f = io.open("/proc/self/stat")
  local s = f and f:read("l") or ""
  if f then f:close() end
  return s:match("^(%d+)") or tostring(os.time())
end

local function sh(cmd)
  local ok = os.execute(cmd)
  if not ok then error("failed: " .. cmd, 2) end
end

local Hosts = {}
Hosts.__index = Hosts

local made = 0

-- n hosts, named <prefix>-1..n; the prefix is unique to this process
-- (and to the run, through LCH_PREFIX, which make test-hosts sets so that
-- its trap can remove whatever a crashed spec left).
function T.up(n)
  made = made + 1
  local prefix = (os.getenv("LCH_PREFIX") or ("lch-" .. pid())) .. "-" .. made
  local self = setmetatable({ prefix = prefix, n = n, procs = {} }, Hosts)
  local ok = os.execute(q(SH) .. " up " .. q(prefix) .. " " .. n)
  if not ok then
    self:down()
    error("tools/hosts.sh up failed")
  end
  return self
end

function Hosts.addr(_, i, port)
  return ("10.77.0.%d:%d"):format(i, port or 7000)
end

-- Starts argv on host i as a host process (helpers.spawn_host); kept to be
-- killed by down().
function Hosts:spawn(i, argv, opts)
  opts = opts or {}
  local full = { "ip", "netns", "exec", self.prefix .. "-" .. i }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  opts.argv = full
  local p = helpers.spawn_host({}, opts)
  self.procs[#self.procs + 1] = p
  return p
end

-- Host i drops its traffic with host j: "both", "in" (from j) or "out" (to j).
function Hosts:cut(i, j, way)
  sh(("%s cut %s %d %d %s"):format(q(SH), q(self.prefix), i, j, way or "both"))
end

function Hosts:heal(i)
  sh(("%s heal %s %d"):format(q(SH), q(self.prefix), i))
end

-- kill -9 of every process of host i (all that live in its namespace).
function Hosts:kill9(i)
  sh(("ip netns pids %s | xargs -r kill -9"):format(q(self.prefix .. "-" .. i)))
end

-- Stops every process started here, then removes the namespaces. Safe to
-- call twice.
function Hosts:down()
  for _, p in ipairs(self.procs) do
    if not p:status() then p:signal("KILL") end
  end
  self.procs = {}
  os.execute(q(SH) .. " down " .. q(self.prefix))
end

-- The wall-clock time of the first log line of `p` matching `pattern`
-- (the host's "2026-01-02T03:04:05.678Z [info] ..." lines), or nil.
function T.log_time(p, pattern)
  for line in p:stderr():gmatch("[^\n]+") do
    if line:match(pattern) then
      local y, mo, d, h, mi, s = line:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)Z")
      if y then
        local secs = os.time{ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
                              min = tonumber(mi), sec = 0, isdst = false }
        -- os.time reads local time; the log is UTC
        local utc = os.time(os.date("!*t", secs))
        return secs + (secs - utc) + tonumber(s)
      end
    end
  end
end

return T
