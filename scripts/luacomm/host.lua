-- luacomm.host: what the luacomm command does with a script, in Lua so the
-- policy reads plainly: run the main chunk in a task, start a service,
-- handle signals, stop gracefully. runtime/host.c calls main(opts).
--
-- The seam with the library is one call, core.set_host{...} in main():
--   startup  host.c: lc_set_base, lc_set_log -> require "luacomm.host" -> H.main
--            H.main -> core.set_host{ signal, stop, stopping, reload }
--   SIGHUP   signals.c -> hook "signal"("HUP") in a task -> reload(opts) here
--            -> loader:reload -> core.count("reloads" | "reload_failures")
--   SIGTERM  signals.c -> hook "signal"("TERM") -> H.stop -> graceful_stop:
--            core.shutdown("listeners"), service stop, core.shutdown("conns"),
--            core.drained("conns") (woken by conn.c), core.shutdown("all"), core.stop
--   comm.stop / comm.stopping / comm.reload (luacomm.lua) -> core.host(name)
local core = require "luacomm.core"
local comm = require "luacomm"
local loader = require "luacomm.loader"

local traceback, unpack, select = debug.traceback, table.unpack, select

local H = { stopping = false, status = 0 }

local function pack(...) return { n = select("#", ...), ... } end

-- Ends the loop once listeners are closed, the service's stop hook has run
-- and every connection has flushed and closed; past stop_timeout whatever
-- is left is cut, and the stop still ends with the requested status.
local function graceful_stop(opts)
  local deadline = core.now() + opts.stop_timeout
  local n = core.shutdown("listeners")
  comm.log.info("stopping: %d listener(s) closed", n)
  if H.on_stop then
    -- protected inside its task, so a failing hook is logged once, here
    local task = core.spawn(function() return xpcall(H.on_stop, traceback) end)
    local finished, ok, err = task:join(math.max(0, deadline - core.now()))
    if not finished then
      task:cancel()
      comm.log.error("stop hook: %s", tostring(ok))
    elseif not ok then
      comm.log.error("stop hook: %s", tostring(err))
    end
  end
  core.shutdown("conns")
  core.drained("conns", math.max(0, deadline - core.now())) -- signalled by the core
  -- HTTP requests still in handlers are answered too (their replies are output)
  while core.http_pending() > 0 and core.now() < deadline do core.sleep(0.01) end
  local left = core.stats()
  if left.conns > 0 then
    comm.log.warn("stop timeout (%gs): cutting %d connection(s) with unsent output",
                  opts.stop_timeout, left.conns)
  end
  core.shutdown("all")
  core.stop() -- main() returns H.status
end

function H.stop(opts, status)
  if H.stopping then return end
  H.stopping = true
  H.status = status or 0
  core.spawn(graceful_stop, opts)
end

local function load_main(opts)
  if opts.code then return load(opts.code, "=(command line)") end
  if opts.script == "-" then return loadfile() end
  return loadfile(opts.script)
end

-- As lua.c's msghandler: any error value becomes a message with a traceback.
local function msghandler(e)
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then
      local ok, s = pcall(tostring, e)
      e = ok and s or "(error object is a " .. type(e) .. " value)"
    else
      e = "(error object is a " .. type(e) .. " value)"
    end
  end
  return traceback(e, 2)
end

-- Runs fn(...) in a task until it ends; true, results | false, message.
local function run_task(fn, ...)
  local task = core.spawn(function(...) return xpcall(fn, msghandler, ...) end, ...)
  local _, why = core.loop(task)
  if task:status() ~= "done" then
    if H.stopping then return true end
    return false, "main task: " .. (why or "stopped") .. " (waiting for something that cannot happen)"
  end
  local r = pack(task:join())
  if not r[2] then return false, r[3] end
  return true, unpack(r, 3, r.n)
end

-- A reload attempt, from SIGHUP or comm.reload(): logged and counted.
local function reload(opts)
  if opts.code or not H.service then
    local why = opts.code and "the script was given with -e: there is no file to reload"
                or "the script is not a service (it returns no table): nothing to reload"
    comm.log.warn("reload: %s", why)
    return false, why
  end
  local t0 = core.now()
  local ok, result = H.loader:reload(opts.script, opts.args, H.service, H.state)
  if ok then
    core.count("reloads")
    comm.log.info("reload ok: %s and %d module(s) in %.1f ms", opts.script, result, (core.now() - t0) * 1e3)
    return true
  end
  local err = result
  core.count("reload_failures")
  comm.log.error("reload failed, old code still serving: %s", err)
  return false, err
end

-- What each signal does (host.c turns them into loop events).
local signal_actions = {
  HUP = function(opts)
    comm.log.info("SIGHUP: reloading")
    local ok, err = reload(opts)
    -- under --workers the supervisor waits for this before the next worker
    local report = debug.getregistry()["luacomm.worker.report"]
    if report then report(ok, err) end
    return ok, err
  end,
  TERM = function(opts) comm.log.info("SIGTERM: stopping"); H.stop(opts, 0) end,
  INT = function(opts) comm.log.info("SIGINT: stopping"); H.stop(opts, 0) end,
}

-- Names that look like a hook but are not one (M.Start, M.relaod): the
-- service would silently never have it called.
local HOOKS = { start = true, reload = true, stop = true }
local function letters(s)
  local t = {}
  for c in s:gmatch(".") do t[#t + 1] = c end
  table.sort(t)
  return table.concat(t)
end
local function lookalike(key)
  if type(key) ~= "string" or HOOKS[key] then return nil end
  local low = key:lower()
  for hook in pairs(HOOKS) do
    if low == hook or low == "on_" .. hook or (#low == #hook and letters(low) == letters(hook)) then return hook end
  end
end

local function warn_lookalikes(service)
  for k, v in pairs(service) do
    local hook = lookalike(k)
    if hook and type(v) == "function" then
      comm.log.warn("service: M.%s looks like the hook M.%s, which luacomm calls; M.%s is never called "
                    .. "(hooks are start, reload and stop, lower case)", k, hook, k)
    end
  end
end

-- A script that returned a table is a service: start(state, ...) runs once.
local function start_service(opts, service)
  warn_lookalikes(service)
  H.service, H.state = service, {}
  -- looked up at stop time: a reload may have added or changed it
  H.on_stop = function()
    if type(service.stop) == "function" then return service.stop(H.state) end
  end
  if type(service.start) ~= "function" then return true end
  return run_task(service.start, H.state, unpack(opts.args, 1, opts.args.n))
end

-- A startup failure: the message (file:line first) and traceback on
-- stderr; as one log record when the log format is JSON.
local function fail(opts, msg)
  if opts.log_json then core.log("error", msg) else io.stderr:write(msg, "\n") end
  return 1
end

-- opts: script | code, args = { n = ..., ... }, includes, stop_timeout.
-- Returns the exit status.
function H.main(opts)
  local dirs = { opts.script and (opts.script:match("^(.*)/[^/]*$") or ".") }
  for _, d in ipairs(opts.includes or {}) do dirs[#dirs + 1] = d end
  H.loader = loader.new(dirs)
  H.loader:install()
  local chunk, err = load_main(opts)
  if not chunk then return fail(opts, err) end
  -- The one place the host plugs into the library.
  core.set_host{
    signal = function(name) return signal_actions[name](opts) end,
    stop = function(status) H.stop(opts, status) end,
    stopping = function() return H.stopping end,
    reload = function() return reload(opts) end,
  }
  if opts.metrics then
    local srv, why = comm.metrics.serve(opts.metrics)
    if not srv then return fail(opts, "luacomm: --metrics " .. opts.metrics .. ": " .. why) end
  end
  local r = pack(run_task(chunk, unpack(opts.args, 1, opts.args.n)))
  if not r[1] then return fail(opts, r[2]) end
  if type(r[2]) == "table" and not H.stopping then
    local ok, why = start_service(opts, r[2])
    if not ok then return fail(opts, why) end
  end
  if not H.stopping then core.loop() end
  return H.status
end

return H
