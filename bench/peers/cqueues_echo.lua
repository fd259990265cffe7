-- Length-framed echo on cqueues, the style of its docs: a controller, one
-- coroutine per client from srv:clients(), blocking-style con:read(n) and
-- con:write. Output is buffered ("bf") and flushed once no whole frame is
-- left in the input buffer, so pipelined frames go back in one write.
--   lua5.4 bench/peers/cqueues_echo.lua PORT
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local signal = require "cqueues.signal"

local port = assert(tonumber(arg[1]), "usage: cqueues_echo.lua PORT")
local MAX_FRAME = 16 * 1024 * 1024

local cq = cqueues.new()

local function serve(con)
  con:setmode("b", "bf")
  while true do
    local h = con:read(4)
    if not h or #h < 4 then break end
    local len = string.unpack(">I4", h)
    if len > MAX_FRAME then break end
    local payload = len > 0 and con:read(len) or ""
    if not payload or #payload < len then break end
    con:write(string.pack(">I4", #payload), payload)
    if con:pending() < 4 and not con:flush() then break end
  end
  con:close()
end

local srv = socket.listen { host = "127.0.0.1", port = port, reuseaddr = true, nodelay = true }
cq:wrap(function()
  for con in srv:clients { nodelay = true } do
    cq:wrap(serve, con)
  end
end)
signal.block(signal.SIGINT, signal.SIGTERM)
local sigs = signal.listen(signal.SIGINT, signal.SIGTERM)
cq:wrap(function()
  sigs:wait()
  os.exit(0)
end)
assert(cq:loop())
