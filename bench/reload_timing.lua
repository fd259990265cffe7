-- How long a reload of a 500-line service takes, and the longest a frame
-- waited for its answer while reloads happened. Run from the repo root:
--   lua5.4 bench/reload_timing.lua [RELOADS]        (default 50)
-- Prints one line: reload_ms_median=… reload_ms_max=… frame_wait_ms_max=… …
package.path = "scripts/?.lua;spec/?.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath
local comm = require "luacomm"
local helpers = require "helpers"

local RELOADS = tonumber(arg[1]) or 50

-- A service of about 500 lines: the echo handler plus many small functions.
local function service(version)
  local out = { [[
local comm = require "luacomm"
local M = {}
function M.start(state, port_file)
  local l = assert(comm.serve("127.0.0.1:0", function(conn)
    while true do
      local f = conn:recv()
      if not f then return end
      conn:send(M.answer(state, f))
    end
  end))
  local _, port = l:addr()
  local fh = assert(io.open(port_file, "w")); fh:write(port); fh:close()
end
function M.answer(state, f) return f end
]] }
  for i = 1, 120 do
    out[#out + 1] = ("function M.f%d(x)\n  local y = x * %d + %d\n  return y %% 7\nend\n"):format(i, i, #version)
  end
  out[#out + 1] = "return M\n"
  return table.concat(out)
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

comm.run(function()
  local dir = helpers.tmpdir()
  local script = dir .. "/svc.lua"
  helpers.writefile(script, service("v0"))
  local _, lines = service("v0"):gsub("\n", "")
  local p = helpers.spawn_host({ script, dir .. "/port" })
  local port = assert(helpers.wait_until(function()
    local s = helpers.readfile(dir .. "/port"); return s and tonumber(s) end, 10))
  local conn = assert(comm.connect("127.0.0.1:" .. port))
  local stop, worst, frames = false, 0, 0
  local pinger = comm.spawn(function()
    while not stop do
      local t0 = comm.now()
      assert(conn:send("ping"))
      assert(conn:recv(5))
      worst = math.max(worst, comm.now() - t0)
      frames = frames + 1
    end
  end)
  local base_worst
  comm.sleep(0.5)
  base_worst, worst = worst, 0
  for i = 1, RELOADS do
    helpers.writefile(script, service("v" .. i))
    p:signal("HUP")
    assert(helpers.wait_until(function()
      local _, n = p:stderr():gsub("reload ok", "")
      return n >= i
    end, 10))
    comm.sleep(0.02)
  end
  stop = true
  pinger:join(5)
  local times = {}
  for ms in p:stderr():gmatch("reload ok: [^\n]- in ([%d.]+) ms") do times[#times + 1] = tonumber(ms) end
  p:signal("TERM")
  p:wait(10)
  local max = math.max(table.unpack(times))
  print(("reload_lines=%d reloads=%d reload_ms_median=%.2f reload_ms_max=%.2f frame_wait_ms_max=%.2f "
         .. "frame_wait_ms_max_without_reload=%.2f frames=%d")
    :format(lines, #times, median(times), max, worst * 1e3, base_worst * 1e3, frames))
end)
