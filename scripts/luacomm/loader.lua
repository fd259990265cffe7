-- luacomm.loader: transactional hot reload of a service (CONTRACT §4).
--
-- A reload runs the script and every module the service loaded from its
-- own folders again, against a staging area, in protected mode. Only when
-- every chunk succeeded are the tables of the first load patched in place
-- (so every reference to them sees the new code); then M.reload(state)
-- runs, and if it raises every patched table is put back as it was.
--
-- The loader records which modules belong to the service with a wrapper
-- around Lua's own package searcher: a module found under one of the
-- service's folders (the script's folder, -I folders) is the service's;
-- luacomm's library and system modules never are.
local core = require "luacomm.core"
local comm = require "luacomm"

local pairs, type, xpcall, tostring, require = pairs, type, xpcall, tostring, require
local traceback = debug.traceback

local M = {}
M._VERSION = "0.1.0"

local Loader = {}
Loader.__index = Loader

-- dirs: folders whose modules are the service's own.
function M.new(dirs)
  local self = setmetatable({ dirs = {}, modules = {}, by_name = {}, busy = false }, Loader)
  for i, d in ipairs(dirs) do self.dirs[i] = d:gsub("/+$", "") .. "/" end
  return self
end

function Loader:owns(name, filename)
  if name == "luacomm" or name:match("^luacomm%.") then return false end
  for _, d in ipairs(self.dirs) do
    if filename:sub(1, #d) == d then return true end
  end
  return false
end

-- Wraps package.searchers[2] (the Lua-file searcher) to record the
-- service's modules, in the order they were first loaded.
function Loader:install()
  local lua_searcher = package.searchers[2]
  package.searchers[2] = function(name)
    local loader, filename = lua_searcher(name)
    if type(loader) == "function" and not self.by_name[name] and self:owns(name, filename) then
      self.by_name[name] = filename
      self.modules[#self.modules + 1] = name
    end
    return loader, filename
  end
end

-- A load error already says file:line; a traceback would only add noise.
local function load_error(msg) error({ msg = msg }, 0) end

local function handler(e)
  if type(e) == "table" and e.msg then return e.msg end
  return traceback(tostring(e), 2)
end

-- Runs fn(...) in protected mode, in a task of its own that the caller
-- waits for: the runaway guard, which keeps raising until its task
-- unwinds, then ends that task and not the reload. Returns true, results |
-- false, message. Must be called from a task.
local function protect(fn, ...)
  local task = core.spawn(function(...) return xpcall(fn, handler, ...) end, ...)
  local r = table.pack(task:join())
  if not r[1] then return false, r[2] end -- the guard ended the task
  return table.unpack(r, 2, r.n)
end

-- The environment the new code runs in: the globals, except `require`,
-- which gives the staged version of a service module. Only chunks loaded
-- with this environment see it; every other task keeps the real require.
-- After staging, `require` here is the real one again, so a function of the
-- new code that requires lazily gets the live modules.
local function staging_env(staged_require)
  return setmetatable({ require = staged_require }, { __index = _G, __newindex = _G })
end

-- Runs the new versions of the script and its modules against a staging
-- table. `require` of a service module from the new code gets the staged
-- version. Returns staged (name -> value) and the script's value, or nil, err.
function Loader:stage(script, args)
  local staged, env = {}, nil
  local function load_module(name)
    local filename = self.by_name[name]
    local chunk, err = loadfile(filename, "bt", env)
    if not chunk then load_error(err) end
    local v = chunk(name, filename)
    if v == nil then v = true end
    staged[name] = v
    return v
  end
  env = staging_env(function(name)
    if staged[name] ~= nil then return staged[name] end
    if self.by_name[name] then return load_module(name) end
    -- a failure (a module not found) is the require's line, not this one
    local ok, v, extra = pcall(require, name)
    if not ok then error(v, 2) end
    return v, extra
  end)
  local last_line = 0
  local ok, result = protect(function()
    comm._staging = core.running() -- timers, tasks, listeners started here fail the reload
    local chunk, err = loadfile(script, "bt", env)
    if not chunk then load_error(err) end
    for line in pairs(debug.getinfo(chunk, "L").activelines) do
      if line > last_line then last_line = line end
    end
    local v = chunk(table.unpack(args, 1, args.n))
    for _, name in ipairs(self.modules) do
      if staged[name] == nil then load_module(name) end
    end
    return v
  end)
  rawset(env, "require", require)
  comm._staging = nil
  if not ok then return nil, result end
  if type(result) ~= "table" then
    -- the last line with code is where the chunk returns
    return nil, ("%s:%d: the new version returns %s, not a table (a service must return one)")
      :format(script, last_line, type(result))
  end
  return staged, result
end

-- Points upvalues of new functions that refer to a staged table at the
-- table it replaces, so `local M = {}` in the new code means the live M.
local function rebind_upvalues(new, map)
  for _, v in pairs(new) do
    if type(v) == "function" then
      local i = 1
      while true do
        local uname, uval = debug.getupvalue(v, i)
        if not uname then break end
        local target = map[uval]
        if target then debug.setupvalue(v, i, target) end
        i = i + 1
      end
    end
  end
end

local function snapshot(t)
  local copy = {}
  for k, v in pairs(t) do copy[k] = v end
  return copy
end

-- Makes old hold exactly new's fields.
local function patch(old, new)
  for k in pairs(old) do
    if new[k] == nil then old[k] = nil end
  end
  for k, v in pairs(new) do old[k] = v end
end

-- Applies staged values: tables patched in place, anything else replaced
-- in package.loaded. Returns the undo list.
local function apply(service, new_service, staged)
  local undo, map = {}, { [new_service] = service }
  for name, v in pairs(staged) do
    local old = package.loaded[name]
    if type(old) == "table" and type(v) == "table" then map[v] = old end
  end
  local function patch_table(old, new)
    undo[#undo + 1] = { table = old, fields = snapshot(old) }
    rebind_upvalues(new, map)
    patch(old, new)
  end
  patch_table(service, new_service)
  for name, v in pairs(staged) do
    local old = package.loaded[name]
    if map[v] then
      patch_table(old, v)
    else
      undo[#undo + 1] = { name = name, value = old }
      package.loaded[name] = v
    end
  end
  return undo
end

local function rollback(undo)
  for i = #undo, 1, -1 do
    local u = undo[i]
    if u.table then patch(u.table, u.fields) else package.loaded[u.name] = u.value end
  end
end

-- The whole transaction. Returns true, nmodules | false, err (err starts
-- with file:line where there is one). Never raises.
function Loader:reload(script, args, service, state)
  if self.busy then return false, "a reload is already in progress" end
  self.busy = true
  local staged, new_service = self:stage(script, args)
  if not staged then
    self.busy = false
    return false, new_service
  end
  local undo = apply(service, new_service, staged)
  local ok, err = true, nil
  if type(service.reload) == "function" then ok, err = protect(service.reload, state) end
  if not ok then
    rollback(undo)
    self.busy = false
    return false, "reload hook: " .. tostring(err)
  end
  self.busy = false
  return true, #self.modules
end

return M
