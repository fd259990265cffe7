-- A reloadable service: edit answer() or greeting.lua, then `kill -HUP <pid>`;
-- the next frame on the same connection gets the new code, with state kept.
--   luacomm examples/reload/service.lua [PORT]     (default 7100)
local comm = require "luacomm"
local greeting = require "greeting"   -- examples/reload/greeting.lua: reloaded too

local M = {}

function M.start(state, port)
  state.hits = 0
  local l = assert(comm.serve("127.0.0.1:" .. (port or 7100), function(conn)
    while true do
      local frame = conn:recv()
      if not frame then return end
      conn:send(M.answer(state, frame))   -- looked up on M at each call
    end
  end))
  local host, bound = l:addr()
  comm.log.info("reload example listening on %s:%d (pid %d)", host, bound, M.pid())
end

function M.answer(state, frame)
  state.hits = state.hits + 1
  return ("v1 %s #%d: %s"):format(greeting.word(), state.hits, frame)
end

function M.pid()
  local f = io.open("/proc/self/stat")
  local pid = f and tonumber(f:read("l"):match("^%d+"))
  if f then f:close() end
  return pid or -1
end

function M.reload(state)
  comm.log.info("reloaded; %d frames answered so far", state.hits)
end

function M.stop(state)
  comm.log.info("stopping after %d frames", state.hits)
end

return M
