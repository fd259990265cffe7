-- luacomm.loader in-process: staging, in-place patching, rollback, and
-- upvalue rebinding, without a host or signals (the integration spec
-- covers those).
local comm = require "luacomm"
local helpers = require "helpers"
local loader = require "luacomm.loader"

insulate("luacomm.loader", function()
  local dir, saved_searcher, saved_path, L

  local function write_service(body)
    return helpers.writefile(dir .. "/svc.lua", body)
  end

  before_each(function()
    dir = helpers.tmpdir()
    saved_searcher, saved_path = package.searchers[2], package.path
    package.path = dir .. "/?.lua;" .. package.path
    L = loader.new({ dir })
    L:install()
  end)

  after_each(function()
    package.searchers[2], package.path = saved_searcher, saved_path
    package.loaded.lmod = nil
  end)

  -- A reload runs its chunks in tasks of their own: it must run in a task.
  local function reload(...)
    local args = table.pack(...)
    return helpers.run(function() return L:reload(table.unpack(args, 1, args.n)) end)
  end

  local function first_load(src, mod)
    if mod then helpers.writefile(dir .. "/lmod.lua", mod) end
    local script = write_service(src)
    return script, assert(loadfile(script))()
  end

  it("records only modules from the service's folders", function()
    first_load("require 'lmod'; require 'cjson'; return {}", "return {}")
    assert.are.same({ "lmod" }, L.modules)
  end)

  it("patches the first-loaded tables in place", function()
    local script, M = first_load("local m = require 'lmod'\nlocal M = {}\nfunction M.v() return 'v1' .. m.x end\nM.old = 1\nreturn M\n",
                                 "return { x = 'a' }")
    local mod = package.loaded.lmod
    write_service("local m = require 'lmod'\nlocal M = {}\nfunction M.v() return 'v2' .. m.x end\nM.new = 2\nreturn M\n")
    helpers.writefile(dir .. "/lmod.lua", "return { x = 'b' }")
    assert.is_true((reload(script, { n = 0 }, M, {})))
    assert.are.equal("v2b", M.v())
    assert.is_nil(M.old)
    assert.are.equal(2, M.new)
    assert.are.equal(mod, package.loaded.lmod)     -- same table, new contents
    assert.are.equal("b", mod.x)
  end)

  it("binds the new code's `local M` to the live table", function()
    local script, M = first_load("local M = {}\nfunction M.get() return M.value end\nM.value = 1\nreturn M\n")
    write_service("local M = {}\nfunction M.get() return M.value end\nM.value = 1\nreturn M\n")
    assert.is_true((reload(script, { n = 0 }, M, {})))
    M.value = 42                                    -- state written to the live table
    assert.are.equal(42, M.get())
  end)

  it("changes nothing when a chunk fails, and reports file:line", function()
    local script, M = first_load("local M = {}\nfunction M.v() return 1 end\nreturn M\n")
    local v = M.v
    write_service("local M = {}\nfunction M.v() return 2 end\nerror('top')\nreturn M\n")
    local ok, err = reload(script, { n = 0 }, M, {})
    assert.is_false(ok)
    assert.truthy(err:match("svc%.lua:3: top"))
    assert.are.equal(v, M.v)
  end)

  it("rolls every table back when M.reload raises", function()
    local script, M = first_load("local M = {}\nfunction M.v() return 1 end\nreturn M\n", "return { x = 1 }")
    require "lmod"
    write_service("require 'lmod'\nlocal M = {}\nfunction M.v() return 2 end\n"
                  .. "function M.reload() error('no') end\nreturn M\n")
    helpers.writefile(dir .. "/lmod.lua", "return { x = 2 }")
    local ok, err = reload(script, { n = 0 }, M, {})
    assert.is_false(ok)
    assert.truthy(err:match("reload hook"))
    assert.are.equal(1, M.v())
    assert.is_nil(M.reload)
    assert.are.equal(1, package.loaded.lmod.x)
  end)

  -- A reload stages the new code while the service keeps running: a task
  -- that requires a module in that window must get the module as loaded,
  -- not the staging loader's view of a file that may be broken.
  it("leaves require alone for every other task while it stages", function()
    local script, M = first_load("require 'lmod'\nreturn {}\n", "return { x = 'live' }")
    local live = require "lmod"
    write_service("local comm = require 'luacomm'\ncomm.sleep(0.2)\nrequire 'lmod'\nreturn {}\n")
    helpers.writefile(dir .. "/lmod.lua", "return { x = -- broken on purpose\n")
    local ok, err, got, why = helpers.run(function()
      local staging = comm.spawn(function() return L:reload(script, { n = 0 }, M, {}) end)
      comm.sleep(0.05) -- the staged script is now asleep inside the reload
      local by = comm.spawn(function() return pcall(require, "lmod") end)
      local _, rok, rv = by:join(5)
      local _, sok, serr = staging:join(5)
      return sok, serr, rok, rv
    end)
    assert.is_true(got, tostring(why))
    assert.are.equal(live, why)
    assert.is_false(ok)                               -- the broken file fails the reload ...
    assert.truthy(err:match("lmod%.lua:%d+:"), err)   -- ... and says where
    assert.are.equal(require, _G.require)
  end)
end)
