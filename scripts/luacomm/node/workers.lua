-- luacomm.node.workers: the tasks user handlers run in. A parked worker is
-- woken for the next message rather than a task created for each (half
-- the cost per request). A handler that blocks keeps its worker; the next
-- message gets another, spawned when none is idle. At most MAX_IDLE wait
-- for work.
local M = {}
M._VERSION = "0.1.0"

local MAX_IDLE = 64

local function worker(node, w)
  local idle = node._idle
  while true do
    local job = w.job
    if job then
      w.job = nil
      job(node, w.fn, w.env, w.deadline, w.link)
    end
    if not node._running or #idle >= MAX_IDLE then return end
    idle[#idle + 1] = w
    w.cond:wait()
  end
end

-- Runs job(node, fn, env, deadline, link) in a worker task.
function M.run(node, job, fn, env, deadline, link)
  local idle = node._idle
  local n = #idle
  local w
  if n > 0 then
    w = idle[n]
    idle[n] = nil
  else
    w = { cond = node._clock.cond() }
  end
  w.job, w.fn, w.env, w.deadline, w.link = job, fn, env, deadline, link
  if n > 0 then w.cond:signal()
  else w.task = node._clock.spawn(worker, node, w) end
end

-- Ends the parked workers (but the calling task).
function M.stop(node)
  local me = node._clock.running()
  for i = #node._idle, 1, -1 do
    local w = node._idle[i]
    node._idle[i] = nil
    if w.task ~= me then w.task:cancel() end
  end
end

return M
