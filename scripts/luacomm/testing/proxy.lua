-- luacomm.testing.proxy: a fault-injecting TCP proxy for framed protocols (4-byte
-- big-endian length + payload, luacomm's framing), written on luacomm.
--
-- It accepts clients, dials the upstream once for each, and forwards whole
-- frames both ways; rules decide what happens to the frames they match:
-- drop them, hold them back, corrupt them, or cut the connection. Frames
-- holding JSON (the node protocol's envelopes) can be matched by field.
--
-- Installed with the library (docs/TESTING.md):
--
--   local proxy = require "luacomm.testing.proxy"
--   local p = proxy.new{ upstream = "127.0.0.1:7002" }   -- listen defaults to 127.0.0.1:0
--   local addr = assert(p:start())                          -- "127.0.0.1:PORT": dial this
--   p:rule{ dir = "down", match = { kind = "rep", type = "work" }, action = "drop", count = 1 }
--   ...
--   p:stop()
--
-- A rule: dir = "up" (client to upstream), "down" (upstream to client) or
-- "both" (default); match = a table of fields the frame's JSON object must
-- hold (values compared with ==), or a function(frame, env, info) -> bool
-- where env is the decoded JSON (or nil) and info = { dir =, conn = the
-- connection's number, n = the frame's number in that direction }, or nil
-- for every frame; action = "drop" | "delay" (hold this frame, and so the
-- ones behind it in that direction, `delay` seconds) | "corrupt" (replace
-- it by rule.with: a string or a function(frame) -> frame; default: the
-- frame with its first byte made invalid for JSON) | "close" (cut both
-- sides); count = how many frames it acts on (default: no limit).
-- The first rule that matches and has count left acts; rule.hits counts.
--
-- From the shell: tools/proxy.lua (a thin command line over M.main):
--   lua5.4 tools/proxy.lua LISTEN UPSTREAM [ACTION:DIR:KIND[:TYPE][*COUNT][@SECONDS]]...
--   e.g. lua5.4 tools/proxy.lua 127.0.0.1:7100 127.0.0.1:7002 drop:down:rep:work*1
local comm = require "luacomm"

local type, pairs, ipairs = type, pairs, ipairs

local M = {}
M._VERSION = "0.1.0"

local Proxy = {}
Proxy.__index = Proxy

local ACTIONS = { drop = true, delay = true, corrupt = true, close = true }
local DIRS = { up = true, down = true, both = true }

-- opts: upstream (required), listen (default "127.0.0.1:0"), max_frame,
-- connect_timeout (default 5).
function M.new(opts)
  if type(opts) ~= "table" or type(opts.upstream) ~= "string" then
    error("proxy.new: { upstream = \"host:port\" } expected", 2)
  end
  return setmetatable({ upstream = opts.upstream, listen = opts.listen or "127.0.0.1:0",
                        max_frame = opts.max_frame, connect_timeout = opts.connect_timeout or 5,
                        rules = {}, pairs_open = {}, nconn = 0,
                        counters = { conns = 0, frames_up = 0, frames_down = 0, dropped = 0,
                                     delayed = 0, corrupted = 0, closed = 0 } }, Proxy)
end

-- Adds a rule (see the header); returns it, so a spec can read rule.hits.
function Proxy:rule(r)
  if type(r) ~= "table" or not ACTIONS[r.action] then
    error("proxy:rule: action must be drop|delay|corrupt|close", 2)
  end
  r.dir = r.dir or "both"
  if not DIRS[r.dir] then error("proxy:rule: dir must be up|down|both", 2) end
  if r.action == "delay" and not (type(r.delay) == "number" and r.delay >= 0) then
    error("proxy:rule: delay needs `delay` seconds", 2)
  end
  if r.match ~= nil and type(r.match) ~= "table" and type(r.match) ~= "function" then
    error("proxy:rule: match must be a table or a function", 2)
  end
  r.hits = 0
  self.rules[#self.rules + 1] = r
  return r
end

function Proxy:clear()
  self.rules = {}
end

function Proxy:stats()
  local out = {}
  for k, v in pairs(self.counters) do out[k] = v end
  return out
end

local function matches(r, frame, env, info)
  if r.dir ~= "both" and r.dir ~= info.dir then return false end
  if r.count and r.hits >= r.count then return false end
  local m = r.match
  if m == nil then return true end
  if type(m) == "function" then return m(frame, env, info) and true or false end
  if type(env) ~= "table" then return false end
  for k, v in pairs(m) do
    if env[k] ~= v then return false end
  end
  return true
end

-- The rule acting on this frame, or nil.
function Proxy:_pick(frame, info)
  if #self.rules == 0 then return nil end
  -- a node frame is its JSON header, then a line feed and the body
  local env = comm.json.decode(frame:match("^[^\n]*"))
  for _, r in ipairs(self.rules) do
    if matches(r, frame, env, info) then
      r.hits = r.hits + 1
      return r
    end
  end
end

local function corrupt(r, frame)
  if type(r.with) == "function" then return r.with(frame) end
  if type(r.with) == "string" then return r.with end
  return "\255" .. frame:sub(2)
end

-- Copies frames from `from` to `to` until either side ends.
function Proxy:_pump(pair, from, to, dir)
  local c = self.counters
  local info = { dir = dir, conn = pair.n, n = 0 }
  while not pair.done do
    local frame = from:recv()
    if frame == nil then break end
    info.n = info.n + 1
    c["frames_" .. dir] = c["frames_" .. dir] + 1
    local r = self:_pick(frame, info)
    local action = r and r.action
    if action == "drop" then
      c.dropped = c.dropped + 1
    elseif action == "close" then
      c.closed = c.closed + 1
      break
    else
      if action == "delay" then
        c.delayed = c.delayed + 1
        comm.sleep(r.delay)
      elseif action == "corrupt" then
        c.corrupted = c.corrupted + 1
        frame = corrupt(r, frame)
      end
      if pair.done or to:closed() or not to:send(frame) then break end
    end
  end
  self:_close_pair(pair)
end

function Proxy:_close_pair(pair)
  if pair.done then return end
  pair.done = true
  self.pairs_open[pair] = nil
  pair.client:close()
  pair.server:close()
end

function Proxy:_serve(client)
  local server = comm.connect(self.upstream, { timeout = self.connect_timeout, max_frame = self.max_frame })
  if server == nil or self.stopped then
    client:close()
    if server then server:close() end
    return
  end
  self.nconn = self.nconn + 1
  self.counters.conns = self.counters.conns + 1
  local pair = { n = self.nconn, client = client, server = server }
  self.pairs_open[pair] = true
  pair.down = comm.spawn(self._pump, self, pair, server, client, "down")
  self:_pump(pair, client, server, "up")
end

-- Starts listening; returns the address to dial ("host:port"), or nil, err.
function Proxy:start()
  local l, err = comm.listen(self.listen, { max_frame = self.max_frame })
  if not l then return nil, err end
  self.listener = l
  local host, port = l:addr()
  self.addr = (host:find(":", 1, true) and "[" .. host .. "]" or host) .. ":" .. port
  self.accepting = comm.spawn(function()
    while true do
      local ok, conn = pcall(l.accept, l)
      if not ok or conn == nil then return end
      comm.spawn(self._serve, self, conn)
    end
  end)
  return self.addr
end

-- Cuts every connection it carries, as a network failure would.
function Proxy:cut()
  for pair in pairs(self.pairs_open) do self:_close_pair(pair) end
end

-- Stops listening and cuts every connection.
function Proxy:stop()
  self.stopped = true
  if self.listener then self.listener:close() end
  self:cut()
end

---------------------------------------------------------------- command line

-- "drop:down:rep:work*1@0.5" -> a rule.
local function parse_rule(s)
  local action, dir, rest = s:match("^(%a+):(%a+):?(.*)$")
  if not action then return nil, "bad rule: " .. s end
  local r = { action = action, dir = dir }
  rest = rest:gsub("@([%d.]+)$", function(d) r.delay = tonumber(d); return "" end)
  rest = rest:gsub("%*(%d+)$", function(n) r.count = tonumber(n); return "" end)
  local kind, mtype = rest:match("^([^:]*):?(.*)$")
  if kind ~= "" then r.match = { kind = kind, type = mtype ~= "" and mtype or nil } end
  return r
end

local function main(listen, upstream, ...)
  if not upstream then
    io.stderr:write("usage: proxy.lua LISTEN UPSTREAM [ACTION:DIR:KIND[:TYPE][*COUNT][@SECONDS]]...\n")
    os.exit(2)
  end
  local p = M.new{ listen = listen, upstream = upstream }
  for _, s in ipairs{ ... } do
    local r = assert(parse_rule(s))
    p:rule(r)
  end
  print("proxy listening on " .. assert(p:start()) .. ", forwarding to " .. upstream)
  p.accepting:join()
end

-- M.main(listen, upstream, rules...): the command line; runs until killed.
function M.main(...)
  if comm.running() then return main(...) end
  return comm.run(main, ...)
end

M.parse_rule = parse_rule
return M
