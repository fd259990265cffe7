-- luacomm.http: HTTP/1.1 server and client in the style of the rest of
-- luacomm (CONTRACT §9). Parsing, keep-alive, pipelining, chunked bodies
-- and the limits are libevent's evhttp (bindings/http.c); this file is the
-- policy: what a handler returns, errors to 500, URLs, redirects.
local core = require "luacomm.core"
local comm = require "luacomm"

local type, tostring, pcall, xpcall, traceback = type, tostring, pcall, xpcall, debug.traceback
local mtype, lower = math.type, string.lower

local M = {}

---------------------------------------------------------------- server

local Server = {}
Server.__index = Server

-- srv:close(): stops accepting now; replies already being written go out.
function Server:close() return self._s:close() end
-- srv:addr() -> host, port
function Server:addr() return self._s:addr() end
Server.__close = Server.close
function Server:__tostring() return tostring(self._s) end

local IDLE = 5 -- seconds an idle request task waits for the next request

local ERROR_HEADERS = { ["content-type"] = "text/plain; charset=utf-8" }

local function fail(hr, req, why)
  comm.log.error("http: %s %s: %s", req.method, req.path, why)
  hr:reply(500, ERROR_HEADERS, "internal server error\n")
end

-- The handler returns status, [headers], [body]; a lone string is a 200
-- text/plain body. Anything else, or an error, is a 500 and a log line.
local function respond(hr, req, ok, status, headers, body)
  if not ok then return fail(hr, req, tostring(status)) end
  if type(status) == "string" and headers == nil then
    status, headers, body = 200, ERROR_HEADERS, status
  end
  if mtype(status) ~= "integer" then
    return fail(hr, req, "handler returned " .. type(status) .. " where a status code was expected")
  end
  if body ~= nil and type(body) ~= "string" then
    return fail(hr, req, "handler returned a " .. type(body) .. " body (a string expected)")
  end
  local sent, err = pcall(hr.reply, hr, status, headers, body)
  if not sent then return fail(hr, req, tostring(err)) end
end

-- http.serve(addr, handler, [opts]) -> server | nil, err
-- opts: max_body (1 MiB), max_headers (16 KiB), timeout (30 s), backlog,
-- tls (HTTPS, the options of comm.listen's tls).
function M.serve(addr, handler, opts)
  if type(addr) ~= "string" then error("bad argument #1 to 'serve' (string expected)", 2) end
  if type(handler) ~= "function" then error("bad argument #2 to 'serve' (function expected)", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #3 to 'serve' (table expected)", 2) end
  -- A task per request, reused: once it answered, it takes the next
  -- request that comes while it is idle, and ends after IDLE seconds
  -- without one (or when the server closes).
  local s
  local function dispatch(req, hr)
    repeat
      respond(hr, req, xpcall(handler, traceback, req))
      req, hr = s:next(IDLE)
    until not req
  end
  local err
  s, err = core.http_serve(addr, dispatch, opts)
  if not s then return nil, err end
  return setmetatable({ _s = s }, Server)
end

---------------------------------------------------------------- client

-- "http://host:port/path?q" -> scheme, host, port, target
local function parse_url(url)
  local scheme, authority, target = url:match("^(%a[%w+.-]*)://([^/?#]*)([^#]*)")
  if not scheme then return nil end
  scheme = lower(scheme)
  local default = scheme == "https" and 443 or 80
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:@]+):?(%d*)$") end
  if not host or host == "" then return nil end
  port = tonumber(port) or default
  if port < 1 or port > 65535 then return nil end
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  return scheme, host, port, target, default
end

-- A Location header against the URL it came from.
local function resolve(base, loc)
  if loc:match("^%a[%w+.-]*://") then return loc end
  local scheme, rest = base:match("^(%a[%w+.-]*:)//(.*)$")
  if loc:sub(1, 2) == "//" then return scheme .. loc end
  local origin = scheme .. "//" .. rest:match("^[^/?#]*")
  if loc:sub(1, 1) == "/" then return origin .. loc end
  local dir = (rest:match("^[^/?#]*(/[^?#]*)") or "/"):match("^(.*/)")
  return origin .. dir .. loc
end

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

local function one_request(o, url, method, body, deadline)
  local scheme, host, port, target, default = parse_url(url)
  if not scheme then return nil, "bad url: " .. url end
  if scheme ~= "http" and scheme ~= "https" then return nil, "unsupported scheme: " .. scheme end
  local bracketed = host:find(":", 1, true) and "[" .. host .. "]" or host
  local headers, have = {}, {}
  for k, v in pairs(o.headers or {}) do
    headers[k] = v
    have[lower(k)] = true
  end
  if not have.host then headers.Host = port == default and bracketed or bracketed .. ":" .. port end
  if body and not have["content-length"] and not have["transfer-encoding"] then
    headers["Content-Length"] = #body
  end
  local left = deadline - core.now()
  if left <= 0 then return nil, "timeout" end
  local tls = scheme == "https" and (o.tls or {}) or nil
  return core.http_request(bracketed .. ":" .. port, method, target, headers, body, left, o.max_body, tls, host)
end

-- http.request{ method, url, headers, body, timeout, follow, max_body, tls }
-- -> res { status, headers, body } | nil, err. Redirects are followed
-- only when asked: follow = true (up to 5) or a number of hops.
function M.request(o)
  if type(o) == "string" then o = { url = o } end
  if type(o) ~= "table" then error("bad argument #1 to 'request' (table expected)", 2) end
  if type(o.url) ~= "string" then error("bad argument #1 to 'request' (url: string expected)", 2) end
  if o.body ~= nil and type(o.body) ~= "string" then error("bad argument #1 to 'request' (body: string expected)", 2) end
  if o.tls ~= nil and type(o.tls) ~= "table" then error("bad argument #1 to 'request' (tls: table expected)", 2) end
  local method = o.method and o.method:upper() or "GET"
  local hops = o.follow == true and 5 or (mtype(o.follow) == "integer" and o.follow or 0)
  local deadline = core.now() + (o.timeout or 30)
  local url, body = o.url, o.body
  while true do
    local res, err = one_request(o, url, method, body, deadline)
    if not res then return nil, err end
    local loc = res.headers.location
    if hops <= 0 or not REDIRECT[res.status] or not loc then return res end
    hops = hops - 1
    url = resolve(url, loc)
    if res.status == 303 or ((res.status == 301 or res.status == 302) and method == "POST") then
      method, body = "GET", nil
    end
  end
end

-- For specs and tools: requests still being handled, over every server.
M.pending = core.http_pending

M._parse_url, M._resolve = parse_url, resolve
return M
