-- Misuse caught where it happens: each error names the user's own line and
-- says what to do, against the real host where the host is involved.
local comm = require "luacomm"
local helpers = require "helpers"
local node = require "luacomm.node"

local function script(dir, name, text)
  return helpers.writefile(dir .. "/" .. name, text)
end

-- Starts `luacomm path`, waits for "ready" on stdout, runs fn(p) and kills
-- the process whatever fn does.
local function with_service(path, fn)
  local p = helpers.spawn_host({ path })
  assert(p:wait_output("ready", "out"), "not ready: " .. p:stderr())
  local ok, e = pcall(fn, p)
  p:kill()
  assert(ok, e)
end

local function reload_and_wait(p, what)
  p:signal("HUP")
  return p:wait_output(what, "err")
end

describe("misuse", function()
  it("comm.run inside the luacomm command says to drop comm.run, at the user's line", function()
    local dir = helpers.tmpdir()
    local path = script(dir, "main.lua", 'local comm = require "luacomm"\n\ncomm.run(function() print("hi") end)\n')
    local status, out, err = helpers.run_host({ path })
    assert.are.equal(1, status)
    assert.are.equal("", out)
    local first = err:match("^[^\n]*")
    assert.are.equal(path .. ":3: luacomm: comm.run called inside a task, where the loop is already running; "
      .. "call the function directly instead (in the luacomm command the script is already a task: drop comm.run)", first)
  end)

  it("a module missing during a reload fails it at the line of the require", function()
    helpers.run(function()
      local dir = helpers.tmpdir()
      local v1 = 'local M = {}\nfunction M.start() M.l = require("luacomm").listen("127.0.0.1:0") print("ready") end\nreturn M\n'
      local path = script(dir, "svc.lua", v1)
      with_service(path, function(p)
        script(dir, "svc.lua", 'local M = {}\nlocal x = require "no_such_module"\n' .. v1:sub(13))
        local line = reload_and_wait(p, "reload failed[^\n]*")
        assert.truthy(line, p:stderr())
        assert.are.equal("reload failed, old code still serving: " .. path .. ":2: module 'no_such_module' not found:",
                         line)
      end)
    end)
  end)

  it("bad addresses are blamed on the caller's line, named as the user calls them", function()
    helpers.run(function()
      local here = debug.getinfo(1, "S").short_src
      local function line_of(fn) local ok, e = pcall(fn); assert.is_false(ok); return e end
      local want = '(address must be "host:port", "[v6]:port" or "unix:/path")'
      local e = line_of(function() local l = comm.listen("bogus"); return l end)
      assert.are.equal(here .. ":" .. (debug.getinfo(1, "l").currentline - 1) .. ": bad argument #1 to 'listen' " .. want, e)
      e = line_of(function() local c = comm.connect("bogus"); return c end)
      assert.are.equal(here .. ":" .. (debug.getinfo(1, "l").currentline - 1) .. ": bad argument #1 to 'connect' " .. want, e)
      e = line_of(function() local l = comm.serve("bogus", function() end); return l end)
      assert.are.equal(here .. ":" .. (debug.getinfo(1, "l").currentline - 1) .. ": bad argument #1 to 'serve' " .. want, e)
      e = line_of(function() local u = comm.udp("bogus"); return u end)
      assert.is_nil(e:find("luacomm.core", 1, true), e)
      assert.truthy(e:find("to 'udp'", 1, true), e)
    end)
  end)

  it("an options argument that is not a table raises instead of being ignored", function()
    helpers.run(function()
      local here = debug.getinfo(1, "S").short_src
      local ok, e = pcall(comm.connect, "127.0.0.1:1", 5)
      assert.is_false(ok)
      assert.are.equal("bad argument #2 to 'connect' (options table expected, got number)", e:gsub("^[^:]*:%d+: ", ""))
      ok, e = pcall(function() local l = comm.listen("127.0.0.1:0", "big"); return l end)
      assert.is_false(ok)
      assert.truthy(e:find(here, 1, true), e)
      assert.truthy(e:find("bad argument #2 to 'listen' (options table expected, got string)", 1, true), e)
      ok, e = pcall(comm.serve, "127.0.0.1:0", function() end, true)
      assert.is_false(ok)
      assert.truthy(e:find("bad argument #3 to 'serve' (options table expected, got boolean)", 1, true), e)
    end)
  end)

  it("a service with lookalike hooks gets a warning naming each", function()
    helpers.run(function()
      local dir = helpers.tmpdir()
      local path = script(dir, "svc.lua", [[
local comm = require "luacomm"
local M = {}
function M.Start() end
function M.relaod() end
function M.stopping() end
print("ready")
comm.after(0, function() end)
return M
]])
      with_service(path, function(p)
        assert.truthy(p:wait_output("M%.relaod", "err"))
        local err = p:stderr()
        assert.truthy(err:find("[warn] service: M.Start looks like the hook M.start, which luacomm calls; "
          .. "M.Start is never called (hooks are start, reload and stop, lower case)", 1, true), err)
        assert.truthy(err:find("M.relaod looks like the hook M.reload", 1, true), err)
        assert.is_nil(err:find("M.stopping", 1, true), "a name that only starts like a hook is not warned about")
      end)
    end)
  end)

  it("a service whose top level starts a timer fails its reload, saying to move it into M.start", function()
    helpers.run(function()
      local dir = helpers.tmpdir()
      local path = script(dir, "svc.lua", [[
local comm = require "luacomm"
local M = {}
local ticks = 0
comm.every(0.01, function() ticks = ticks + 1 end)
function M.start() print("ready") end
function M.ticks() return ticks end
return M
]])
      with_service(path, function(p)
        local line = reload_and_wait(p, "reload failed[^\n]*")
        assert.truthy(line, p:stderr())
        assert.are.equal("reload failed, old code still serving: " .. path .. ":4: comm.every at the top level of a "
          .. "service would run again on every reload: move it into M.start (which runs once)", line)
        -- a second reload fails the same way: the timer is never duplicated
        p:signal("HUP")
        assert(helpers.wait_until(function()
          local _, n = p:stderr():gsub("reload failed", "")
          return n == 2
        end, 10))
        assert.is_nil(p:stderr():find("reload ok", 1, true))
      end)
    end)
  end)

  it("a one-way message of a type with no handler is logged at warn by the receiver and counted", function()
    helpers.run(function()
      local warned = {}
      local log = { debug = function() end, info = function() end, error = comm.log.error,
                    warn = function(fmt, ...) warned[#warned + 1] = fmt:format(...) end }
      local a = node.new{ name = "a", listen = "127.0.0.1:0", log = log, heartbeat = 0.2, timeout = 2 }
      assert(a:start())
      local b = node.new{ name = "b", peers = { a.listen_addr }, log = { debug = function() end,
        info = function() end, warn = function() end, error = comm.log.error } }
      assert(b:start())
      assert(helpers.wait_until(function() return (b:peers().a or {}).state == "up" end, 5))
      assert.is_true(b:send("a", "nosuch", { x = 1 }))
      assert(helpers.wait_until(function() return a:stats().no_handler == 1 end, 5))
      assert.are.same({ 'node a: no handler for message "nosuch" from b: dropped (counted in no_handler)' }, warned)
      b:stop(); a:stop()
    end)
  end)
end)
