-- Length-framed echo on luv (libuv), the callback style luv's docs show:
-- uv.new_tcp, bind, listen, accept, read_start. Every complete frame is
-- handed on as a string (payload extracted, header rebuilt), the frames of
-- one read go back in one write of a table of strings.
--   lua5.4 bench/peers/luv_echo.lua PORT
local uv = require "luv"

local port = assert(tonumber(arg[1]), "usage: luv_echo.lua PORT")
local MAX_FRAME = 16 * 1024 * 1024

local function serve(client)
  local pending = ""
  client:read_start(function(err, data)
    if err or not data then
      client:close()
      return
    end
    local buf = pending == "" and data or pending .. data
    local pos, out = 1, {}
    while #buf - pos + 1 >= 4 do
      local len = string.unpack(">I4", buf, pos)
      if len > MAX_FRAME then
        client:close()
        return
      end
      if #buf - pos + 1 < 4 + len then break end
      local payload = buf:sub(pos + 4, pos + 3 + len)
      out[#out + 1] = string.pack(">I4", #payload)
      out[#out + 1] = payload
      pos = pos + 4 + len
    end
    pending = buf:sub(pos)
    if #out > 0 then client:write(out) end
  end)
end

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", port))
assert(server:listen(1024, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:nodelay(true)
  serve(client)
end))
local function stop() uv.stop() end
for _, sig in ipairs { "sigint", "sigterm" } do
  uv.new_signal():start(sig, stop)
end
uv.run()
