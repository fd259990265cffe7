-- luacomm.metrics (comm.metrics): the process's counters, every started
-- node's counters and peers, and the script's own metrics, in the
-- Prometheus text exposition format 0.0.4; /health and /peers beside it.
--
-- Nothing here runs per message: the exposition reads comm.stats() and
-- n:stats() only when /metrics is fetched; user metrics cost a table write.
local core = require "luacomm.core"
local comm = require "luacomm"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local concat, sort, format, mtype = table.concat, table.sort, string.format, math.type

local M = {}

-- Started nodes (luacomm.node registers them in start and removes them in
-- stop; weak, so a dropped node does not live on for our sake).
M.nodes = require("luacomm.registry").nodes

-- comm.stats() and n:stats() keys that go up and down: gauges. Every other
-- key only grows: a counter, exposed with _total.
local PROCESS_GAUGES = { tasks = true, timers = true, conns = true, listeners = true,
                         lingering = true, udp = true, buffered_in = true }
local NODE_GAUGES = { links = true, pending = true, dedup = true, dedup_senders = true, known_nodes = true }

---------------------------------------------------------------- formatting

local function number(v)
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v ~= v then return "NaN" end
  if mtype(v) == "integer" then return tostring(v) end
  local s = format("%.15g", v) -- short when exact: le="0.1", not 0.10000000000000001
  if tonumber(s) ~= v then s = format("%.17g", v) end
  return s
end

local function escape_label(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ["\""] = "\\\"", ["\n"] = "\\n" }))
end

local function escape_help(v)
  return (tostring(v):gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local function labels(names, values, extra_name, extra_value)
  local parts = {}
  for i, n in ipairs(names or {}) do parts[#parts + 1] = n .. '="' .. escape_label(values[i]) .. '"' end
  if extra_name then parts[#parts + 1] = extra_name .. '="' .. escape_label(extra_value) .. '"' end
  if #parts == 0 then return "" end
  return "{" .. concat(parts, ",") .. "}"
end

local function family(out, name, kind, help)
  out[#out + 1] = "# HELP " .. name .. " " .. escape_help(help)
  out[#out + 1] = "# TYPE " .. name .. " " .. kind
end

local function sanitize(k)
  k = tostring(k):gsub("[^%w_]", "_")
  if k:match("^%d") then k = "_" .. k end
  return k
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

---------------------------------------------------------------- user metrics

local user, user_order = {}, {}

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"

local function check_labels(names, fn)
  if names == nil then return {} end
  if type(names) ~= "table" then error("bad argument #3 to '" .. fn .. "' (list of label names expected)", 3) end
  for _, n in ipairs(names) do
    if type(n) ~= "string" or not n:match(LABEL) or n:match("^__") or n == "le" then
      error("bad label name '" .. tostring(n) .. "' in '" .. fn .. "'", 3)
    end
  end
  return names
end

local function key_of(m, values)
  local n = #m.labels
  if n == 0 then return "" end
  if type(values) ~= "table" or #values ~= n then
    error(format("metric %s: %d label value(s) expected", m.name, n), 3)
  end
  local parts = {}
  for i = 1, n do parts[i] = tostring(values[i]) end
  return concat(parts, "\0")
end

local function register(kind, name, help, label_names, fn)
  if type(name) ~= "string" or not name:match(NAME) then error("bad metric name '" .. tostring(name) .. "'", 3) end
  if name:match("^luacomm_") then error("metric names starting with luacomm_ are the runtime's: " .. name, 3) end
  if type(help) ~= "string" then error("bad argument #2 to '" .. fn .. "' (help text expected)", 3) end
  local old = user[name]
  if old then
    if old.kind ~= kind then error("metric " .. name .. " exists already as a " .. old.kind, 3) end
    return old, true
  end
  local m = { kind = kind, name = name, help = help, labels = check_labels(label_names, fn),
              series = {}, values = {} }
  user[name] = m
  user_order[#user_order + 1] = m
  return m
end

local Counter = {}
Counter.__index = Counter

-- counter:inc([n], [labelvalues]): n >= 0, default 1.
function Counter:inc(n, values)
  if type(n) == "table" then n, values = nil, n end
  n = n or 1
  if type(n) ~= "number" or n < 0 then error("counter " .. self.name .. ": inc needs a number >= 0", 2) end
  local k = key_of(self, values)
  if self.values[k] == nil then self.series[k] = values or {} end
  self.values[k] = (self.values[k] or 0) + n
end

-- comm.metrics.counter(name, help, [labels]); "_total" is added to a name
-- without it, as Prometheus expects of counters.
function M.counter(name, help, label_names)
  if type(name) == "string" and not name:match("_total$") then name = name .. "_total" end
  return setmetatable(register("counter", name, help, label_names, "counter"), Counter)
end

local Gauge = {}
Gauge.__index = Gauge

function Gauge:set(v, values)
  if type(v) ~= "number" then error("gauge " .. self.name .. ": set needs a number", 2) end
  local k = key_of(self, values)
  self.series[k] = values or {}
  self.values[k] = v
end

function Gauge:inc(n, values)
  if type(n) == "table" then n, values = nil, n end
  local k = key_of(self, values)
  self.series[k] = values or {}
  self.values[k] = (self.values[k] or 0) + (n or 1)
end

function Gauge:dec(n, values)
  if type(n) == "table" then n, values = nil, n end
  return self:inc(-(n or 1), values)
end

function M.gauge(name, help, label_names)
  return setmetatable(register("gauge", name, help, label_names, "gauge"), Gauge)
end

local Histogram = {}
Histogram.__index = Histogram

-- histogram:observe(v, [labelvalues])
function Histogram:observe(v, values)
  if type(v) ~= "number" then error("histogram " .. self.name .. ": observe needs a number", 2) end
  local k = key_of(self, values)
  local s = self.values[k]
  if s == nil then
    s = { sum = 0, count = 0, counts = {} }
    for i = 1, #self.buckets do s.counts[i] = 0 end
    self.values[k], self.series[k] = s, values or {}
  end
  s.sum, s.count = s.sum + v, s.count + 1
  local b = self.buckets
  for i = 1, #b do
    if v <= b[i] then s.counts[i] = s.counts[i] + 1 end
  end
end

local DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

-- comm.metrics.histogram(name, help, [buckets], [labels]): buckets are
-- upper bounds, ascending; +Inf is implied.
function M.histogram(name, help, buckets, label_names)
  local m, existed = register("histogram", name, help, label_names, "histogram")
  if existed then return m end
  local b = {}
  for i, v in ipairs(buckets or DEFAULT_BUCKETS) do
    if type(v) ~= "number" or (i > 1 and v <= b[i - 1]) then
      error("histogram " .. name .. ": buckets must be ascending numbers", 2)
    end
    if v ~= math.huge then b[#b + 1] = v end
  end
  m.buckets = b
  return setmetatable(m, Histogram)
end

---------------------------------------------------------------- exposition

local function expose_process(out)
  local st = comm.stats()
  for _, k in ipairs(sorted_keys(st)) do
    local v = st[k]
    if type(v) == "number" then
      local gauge = PROCESS_GAUGES[k]
      local name = "luacomm_" .. sanitize(k) .. (gauge and "" or "_total")
      family(out, name, gauge and "gauge" or "counter", "comm.stats()." .. k)
      out[#out + 1] = name .. " " .. number(v)
    end
  end
end

local function started_nodes()
  local list = {}
  for n in pairs(M.nodes) do list[#list + 1] = n end
  sort(list, function(a, b) return tostring(a.name) < tostring(b.name) end)
  return list
end

local function expose_nodes(out, nodes)
  local stats, keys = {}, {}
  for i, n in ipairs(nodes) do
    stats[i] = n:stats()
    for k, v in pairs(stats[i]) do
      if type(v) == "number" then keys[k] = true end
    end
  end
  for _, k in ipairs(sorted_keys(keys)) do
    local gauge = NODE_GAUGES[k]
    local name = "luacomm_node_" .. sanitize(k) .. (gauge and "" or "_total")
    family(out, name, gauge and "gauge" or "counter", "n:stats()." .. k .. " of each started node")
    for i, n in ipairs(nodes) do
      local v = stats[i][k]
      if type(v) == "number" then out[#out + 1] = name .. labels(nil, nil, "node", n.name) .. " " .. number(v) end
    end
  end
  local up, rtt = {}, {}
  for _, n in ipairs(nodes) do
    local peers = n:peers()
    for _, p in ipairs(sorted_keys(peers)) do
      local l = '{node="' .. escape_label(n.name) .. '",peer="' .. escape_label(p) .. '"}'
      up[#up + 1] = "luacomm_peer_up" .. l .. " " .. (peers[p].state == "up" and "1" or "0")
      if type(peers[p].rtt) == "number" then rtt[#rtt + 1] = "luacomm_peer_rtt_seconds" .. l .. " " .. number(peers[p].rtt) end
    end
  end
  family(out, "luacomm_peer_up", "gauge", "1 while the node reports the peer up, 0 once it reported it down")
  for _, line in ipairs(up) do out[#out + 1] = line end
  family(out, "luacomm_peer_rtt_seconds", "gauge", "last heartbeat round trip to the peer")
  for _, line in ipairs(rtt) do out[#out + 1] = line end
end

local function expose_user(out)
  for _, m in ipairs(user_order) do
    family(out, m.name, m.kind, m.help)
    for _, k in ipairs(sorted_keys(m.values)) do
      local v, lv = m.values[k], m.series[k]
      if m.kind ~= "histogram" then
        out[#out + 1] = m.name .. labels(m.labels, lv) .. " " .. number(v)
      else
        for i, le in ipairs(m.buckets) do
          out[#out + 1] = m.name .. "_bucket" .. labels(m.labels, lv, "le", number(le)) .. " " .. v.counts[i]
        end
        out[#out + 1] = m.name .. "_bucket" .. labels(m.labels, lv, "le", "+Inf") .. " " .. v.count
        out[#out + 1] = m.name .. "_sum" .. labels(m.labels, lv) .. " " .. number(v.sum)
        out[#out + 1] = m.name .. "_count" .. labels(m.labels, lv) .. " " .. v.count
      end
    end
  end
end

-- comm.metrics.exposition() -> the /metrics page as a string.
function M.exposition()
  local out = {}
  expose_process(out)
  expose_nodes(out, started_nodes())
  expose_user(out)
  out[#out + 1] = ""
  return concat(out, "\n")
end

---------------------------------------------------------------- endpoints

local CT_METRICS = "text/plain; version=0.0.4; charset=utf-8"
local TEXT = { ["content-type"] = "text/plain; charset=utf-8" }
local JSON = { ["content-type"] = "application/json" }
local HTML = { ["content-type"] = "text/html; charset=utf-8" }

local function html_escape(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ["\""] = "&quot;" }))
end

-- /peers as a small HTML table, for a browser.
local function peers_html(n, peers)
  local rows = { "<!doctype html><title>peers of " .. html_escape(n.name) .. "</title>",
                 "<h1>peers of node " .. html_escape(n.name) .. "</h1>",
                 "<table border=1 cellpadding=4><tr><th>peer</th><th>state</th><th>address</th>"
                   .. "<th>rtt (ms)</th><th>last seen (s ago)</th></tr>" }
  local now = core.now()
  for _, p in ipairs(sorted_keys(peers)) do
    local e = peers[p]
    rows[#rows + 1] = format("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
      html_escape(p), html_escape(e.state), html_escape(e.addr or ""),
      e.rtt and format("%.2f", e.rtt * 1e3) or "", e.last_seen and format("%.1f", now - e.last_seen) or "")
  end
  rows[#rows + 1] = "</table>"
  return concat(rows, "\n") .. "\n"
end

local function peers_page(req)
  local nodes = started_nodes()
  local n = nodes[1]
  if req.query.node then
    n = nil
    for _, x in ipairs(nodes) do if x.name == req.query.node then n = x end end
  end
  if not n then return 404, TEXT, "no such node\n" end
  local peers = n:peers()
  local accept = req.headers.accept or ""
  if req.query.format == "html" or (req.query.format == nil and accept:find("text/html", 1, true)) then
    return 200, HTML, peers_html(n, peers)
  end
  if next(peers) == nil then return 200, JSON, "{}" end
  return 200, JSON, comm.json.encode(peers)
end

local routes = {
  ["/metrics"] = function() return 200, { ["content-type"] = CT_METRICS }, M.exposition() end,
  ["/health"] = function()
    if comm.stopping() then return 503, TEXT, "stopping\n" end
    return 200, TEXT, "ok\n"
  end,
  ["/peers"] = peers_page,
}

-- The handler of the metrics server, for scripts that mount it elsewhere.
function M.handler(req)
  local route = routes[req.path]
  if not route then return 404, TEXT, "not found\n" end
  if req.method ~= "GET" and req.method ~= "HEAD" then return 405, { ["content-type"] = TEXT["content-type"], allow = "GET, HEAD" }, "" end
  return route(req)
end

-- comm.metrics.serve(addr, [opts]) -> server | nil, err. The listener stays
-- open through a graceful stop (so /health answers 503 until the process
-- exits) and does not keep the process alive by itself.
function M.serve(addr, opts)
  local http = require "luacomm.http"
  local o = { timeout = 10, max_body = 0 }
  for k, v in pairs(opts or {}) do o[k] = v end
  o.aux = true
  return http.serve(addr, M.handler, o)
end

return M
