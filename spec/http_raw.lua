-- Raw HTTP/1.1 over a luacomm connection, for specs that must see what a
-- client library hides (pipelining order, closes, limits). Test-side only:
-- the product parses HTTP with libevent.
local R = {}

function R.get(path, extra)
  return "GET " .. path .. " HTTP/1.1\r\nHost: test\r\n" .. (extra or "") .. "\r\n"
end

-- Reads one response from conn: { status, headers, body } or nil, err.
-- Bodies by Content-Length or chunked.
function R.read_response(conn, timeout)
  local line, err = conn:readline(timeout)
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "bad status line: " .. line end
  local headers = {}
  while true do
    local h = conn:readline(timeout)
    if not h then return nil, "closed in headers" end
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  local body = ""
  if headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = tonumber((conn:readline(timeout) or ""):match("^%x+"), 16)
      if not size then return nil, "bad chunk" end
      if size == 0 then conn:readline(timeout); break end
      parts[#parts + 1] = conn:read(size, timeout)
      conn:readline(timeout)
    end
    body = table.concat(parts)
  elseif tonumber(headers["content-length"] or "0") > 0 then
    body, err = conn:read(tonumber(headers["content-length"]), timeout)
    if not body then return nil, err end
  end
  return { status = status, headers = headers, body = body }
end

return R
