-- The runaway guard (--task-budget) against the real host: a task that
-- spins without yielding is interrupted wherever it spins, plain coroutines
-- nested in it included, and the guard changes nothing else: no hook while
-- tasks behave, coroutine.resume and coroutine.wrap as in stock Lua.
local helpers = require "helpers"

local function script(body)
  local path = helpers.tmpdir() .. "/guarded.lua"
  helpers.writefile(path, body)
  return path
end

-- Runs SCRIPT under the host with a short budget: status, stdout, stderr.
local function guarded(body, budget)
  return helpers.run_host({ "--task-budget", budget or "0.2", script(body) })
end

-- A task spins in `how`; another task keeps ticking, and reports once the
-- spinner has failed. The spinner must be cut and the host live on.
local SPIN_IN = [[
local comm = require "luacomm"
local spinner = comm.spawn(function()
  %s
end)
local ok, err = spinner:join()
print("spinner", ok, err)
local t0 = comm.now()
comm.sleep(0.05)
print("alive after", comm.now() - t0 >= 0.05)
]]

local spins = {
  ["the task itself"] = "while true do end",
  ["a coroutine.wrap it called"] = "coroutine.wrap(function() while true do end end)()",
  ["a coroutine it resumed"] = [[
    local co = coroutine.create(function() while true do end end)
    local ok, err = coroutine.resume(co)
    print("resume returned", ok, err)
    while true do end]],
  ["a coroutine two levels down"] = [[
    coroutine.wrap(function()
      local inner = coroutine.wrap(function() while true do end end)
      inner()
    end)()]],
  ["a pcall that swallows the first error"] = "while true do pcall(function() while true do end end) end",
}

describe("runaway guard", function()
  for where, code in pairs(spins) do
    it("interrupts a task spinning in " .. where, function()
      local status, out, err = guarded(SPIN_IN:format(code))
      assert.are.equal(0, status, err)
      assert.truthy(out:match("spinner\tfalse\t[^\n]*without yielding %(budget 0.2 s%): interrupted"), out .. err)
      assert.truthy(out:match("alive after\ttrue"), out .. err)
      if code:match("resume returned") then
        assert.truthy(out:match("resume returned\tfalse\t[^\n]*without yielding"), out)
      end
    end)
  end

  it("sets no hook on a task that yields in time", function()
    local status, out, err = guarded([[
local comm = require "luacomm"
local t = comm.spawn(function()
  local seen = {}
  for i = 1, 20 do
    seen[#seen + 1] = tostring(debug.gethook() ~= nil)
    local x = 0
    for _ = 1, 2e5 do x = x + 1 end -- some work, well under the budget
    comm.sleep(0.01)
  end
  return table.concat(seen, ",")
end)
local ok, seen = t:join()
print(assert(ok and seen))
]], "0.05")
    assert.are.equal(0, status, err)
    assert.truthy(out:match("^false"), out)
    assert.falsy(out:match("true,true"), out) -- a hook armed late is gone at the next resume
  end)

  it("keeps coroutine.resume and coroutine.wrap as stock Lua has them", function()
    local body = [[
local function show(...) local t = table.pack(...) for i = 1, t.n do t[i] = tostring(t[i]) end print(table.concat(t, " ")) end
local gen = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
show(gen(1)); show(gen(5)); show(pcall(gen))
show(pcall(coroutine.wrap(function() error("boom") end)))
show(pcall(coroutine.wrap(function() error({}) end)))
show(pcall(coroutine.wrap(function() error("no position", 0) end)))
local co = coroutine.create(function(x) coroutine.yield(x, "y") error("late") end)
show(coroutine.resume(co, 7)); show(coroutine.resume(co)); show(coroutine.resume(co)); show(coroutine.status(co))
show(pcall(coroutine.resume, 42))
show(pcall(coroutine.wrap, 42))
local closed = false
local w = coroutine.wrap(function()
  local _ <close> = setmetatable({}, { __close = function() closed = true end })
  coroutine.yield()
  error("x")
end)
w(); show(pcall(w)); show(closed)
]]
    local path = script(body)
    local status, guarded_out, err = helpers.run_host({ "--task-budget", "5", path })
    assert.are.equal(0, status, err)
    local stock = assert(io.popen("lua5.4 " .. path .. " 2>&1")):read("a")
    guarded_out = guarded_out:gsub("table: 0x%x+", "table")
    stock = stock:gsub("table: 0x%x+", "table")
    assert.are.equal(stock, guarded_out)
  end)
end)
