-- What the node harnesses share: a real node (luacomm.node, unchanged) on
-- a loopback port of its own, the frames of an input, and the check that
-- after whatever a peer sent, the node still answers a well-behaved peer
-- and no task of the process failed.
local comm = require "luacomm"
local core = require "luacomm.core"
local node = require "luacomm.node"

local M = {}

local function nop() end
M.quiet = { debug = nop, info = nop, warn = nop, error = nop }

function M.check(cond, ...)
  if not cond then error(string.format(...), 2) end
end

-- The input's frames: its bytes cut at each "\0" (JSON never holds one).
function M.frames(s)
  local out = {}
  for f in (s .. "\0"):gmatch("([^%z]*)%z") do out[#out + 1] = f end
  return out
end

-- A node the fuzzer talks to. secret: nil, or one both ends share.
function M.node(name, opts)
  local o = { name = name, heartbeat = 0.2, timeout = 1, handshake_timeout = 1, log = M.quiet,
              reconnect = { min = 0.01, max = 0.05 }, max_frame = 65536 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local n = node.new(o)
  n:on("echo", function(body) return body end)
  assert(n:start())
  return n
end

-- The well-behaved peer: links to addr and must get an answer from `to`.
function M.probe(addr, to, secret)
  local p = M.node("probe", { peers = { addr }, secret = secret })
  local reply, err
  local deadline = comm.now() + 5
  repeat
    reply, err = p:request(to, "echo", "ok", { timeout = 0.5 })
    if reply ~= "ok" then comm.sleep(0.02) end
  until reply == "ok" or comm.now() > deadline
  p:stop()
  M.check(reply == "ok", "the node stopped answering a good peer: %s", tostring(err))
end

-- Reads c until a frame containing marker arrives, or it ends.
function M.drain(c, marker, seconds)
  local deadline = comm.now() + (seconds or 2)
  while true do
    local left = deadline - comm.now()
    if left <= 0 then return end
    local f = c:recv(left)
    if f == nil or (marker and f:find(marker, 1, true)) then return end
  end
end

-- Runs fn in comm.run with the logs quiet, then: no task may have failed.
function M.run(fn)
  core.log_level("error")
  comm.run(fn)
  M.check(comm.stats().task_errors == 0, "a task failed (see the log above)")
end

M.PROTOCOL = node.PROTOCOL
return M
