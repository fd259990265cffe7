-- make install (CONTRACT §7): the standard Lua layout under PREFIX; the
-- installed host finds its own library with no LUA_PATH; stock lua5.4 and
-- busted --lua=lua5.4 use the library once LUA_PATH/LUA_CPATH point there.
local helpers = require "helpers"

local UNSET = { "env", "-u", "LUA_PATH", "-u", "LUA_PATH_5_4", "-u", "LUA_CPATH", "-u", "LUA_CPATH_5_4",
                "-u", "LUA_INIT", "-u", "LUA_INIT_5_4" }

local function argv(...)
  local t = {}
  for _, part in ipairs{ ... } do
    for _, a in ipairs(part) do t[#t + 1] = a end
  end
  return t
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Every Lua file of the library, relative to scripts/.
local function library_files()
  local p = assert(io.popen("cd " .. helpers.shquote(helpers.ROOT .. "/scripts") .. " && find . -name '*.lua' | sort"))
  local t = {}
  for l in p:lines() do t[#t + 1] = l:sub(3) end
  p:close()
  return t
end

-- A client/server round trip over loopback that prints where the library
-- and the C module were loaded from.
local ROUND_TRIP = [[
  local comm = require "luacomm"
  local function go()
    local l = assert(comm.serve("127.0.0.1:0", function(c) c:send("re:" .. c:recv()) end))
    local _, port = l:addr()
    local c = assert(comm.connect("127.0.0.1:" .. port))
    assert(c:send("ping"))
    local answer = assert(c:recv(5))
    l:close(); c:close()
    return answer
  end
  print(RUN(go))
  print(debug.getinfo(comm.run, "S").source)
  print(package.searchpath("luacomm.core", package.cpath) or "core preloaded")
]]

describe("make install PREFIX=...", function()
  local prefix, share, lib

  lazy_setup(function()
    prefix = helpers.tmpdir() .. "/prefix"
    share, lib = prefix .. "/share/lua/5.4", prefix .. "/lib/lua/5.4"
    -- Install the flavour under test (build/ or build-asan/), whatever make
    -- invocation runs this suite.
    local flavour = helpers.BIN:match("build%-(%w+)/luacomm$") or ""
    local log = helpers.tmpdir() .. "/make.log"
    local ok = os.execute(("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C %s install PREFIX=%s B=%s >%s 2>&1")
      :format(helpers.shquote(helpers.ROOT), helpers.shquote(prefix), flavour, helpers.shquote(log)))
    assert(ok, "make install failed:\n" .. (helpers.readfile(log) or ""))
  end)

  it("lays out the host, every Lua file of the library and the C module the standard way", function()
    assert.is_true(exists(prefix .. "/bin/luacomm"))
    assert.is_true(os.execute("test -x " .. helpers.shquote(prefix .. "/bin/luacomm")))
    assert.is_true(exists(lib .. "/luacomm/core.so"))
    assert.is_true(exists(lib .. "/luacomm/tls.so"))
    local files = library_files()
    assert.truthy(#files >= 2)
    for _, rel in ipairs(files) do
      assert(exists(share .. "/" .. rel), "not installed: " .. rel)
      assert.are.equal(helpers.readfile(helpers.ROOT .. "/scripts/" .. rel), helpers.readfile(share .. "/" .. rel))
    end
  end)

  it("installs the man page, the docs and the examples", function()
    local man = prefix .. "/share/man/man1/luacomm.1"
    assert.are.equal(helpers.readfile(helpers.ROOT .. "/docs/luacomm.1"), helpers.readfile(man))
    -- `man luacomm` finds it through the prefix's man folder
    local st, out = helpers.run_host({}, {
      argv = { "env", "-u", "LD_PRELOAD", "-u", "ASAN_OPTIONS", "MANPATH=" .. prefix .. "/share/man", "MANWIDTH=80",
               "man", "luacomm" } })
    assert.are.equal(0, st)
    assert.truthy(out:find("luacomm - run a scriptable messaging node", 1, true), out)
    local doc = prefix .. "/share/doc/luacomm/"
    for _, rel in ipairs{ "README.md", "CHANGELOG.md", "docs/API.md", "docs/NODE.md", "docs/TESTING.md",
                          "docs/PROTOCOL.md", "examples/echo.lua", "examples/pubsub/broker.lua" } do
      assert.are.equal(helpers.readfile(helpers.ROOT .. "/" .. rel), helpers.readfile(doc .. rel), rel)
    end
  end)

  it("the installed host finds its own library with no LUA_PATH set", function()
    local code = ROUND_TRIP:gsub("RUN%(go%)", "go()")
    local st, out, err = helpers.run_host({}, {
      argv = argv(UNSET, { prefix .. "/bin/luacomm", "-e", code }),
      cwd = helpers.tmpdir(), -- nowhere near the source tree
    })
    assert.are.equal(0, st, err)
    local l = {}
    for line in out:gmatch("[^\n]+") do l[#l + 1] = line end
    assert.are.equal("re:ping", l[1])
    assert.are.equal("@" .. prefix .. "/bin/../share/lua/5.4/luacomm.lua", l[2])
    helpers.assert_no_error_log(err)
  end)

  it("the installed tree still works after it is moved elsewhere", function()
    local moved = helpers.tmpdir() .. "/moved"
    assert(os.execute(("cp -r %s %s"):format(helpers.shquote(prefix), helpers.shquote(moved))))
    local st, out, err = helpers.run_host({}, {
      argv = argv(UNSET, { moved .. "/bin/luacomm", "-e",
        "print(debug.getinfo(require('luacomm').run, 'S').source) " ..
        "print(#require('luacomm').crypto.hmac_sha256('k', 'd'), package.searchpath('luacomm.tls', package.cpath))" }),
      cwd = helpers.tmpdir(),
    })
    assert.are.equal(0, st, err)
    -- the TLS module, loaded on first use, comes from the moved tree too
    assert.are.equal("@" .. moved .. "/bin/../share/lua/5.4/luacomm.lua\n32\t" .. moved ..
      "/bin/../lib/lua/5.4/luacomm/tls.so\n", out)
  end)

  local function lua_env()
    return { "LUA_PATH=" .. share .. "/?.lua;" .. share .. "/?/init.lua;;",
             "LUA_CPATH=" .. lib .. "/?.so;;" }
  end

  it("stock lua5.4 requires luacomm from there and runs comm.run over loopback", function()
    local code = ROUND_TRIP:gsub("RUN%(go%)", "comm.run(go)")
    local st, out, err = helpers.run_host({}, {
      argv = argv(UNSET, lua_env(), { "lua5.4", "-e", code }),
      cwd = helpers.tmpdir(),
    })
    assert.are.equal(0, st, err)
    assert.are.equal(("re:ping\n@%s/luacomm.lua\n%s/luacomm/core.so\n"):format(share, lib), out)
    assert.are.equal("", err)
  end)

  it("busted --lua=lua5.4 runs a user's spec that drives the loop with comm.run", function()
    local dir = helpers.tmpdir()
    -- the example of CONTRACT §7, word for word, plus a check of the Lua in use
    helpers.writefile(dir .. "/my_node_spec.lua", [[
local comm = require "luacomm"
describe("my node", function()
  it("answers", function()
    comm.run(function()
      local l = comm.serve("127.0.0.1:0", function(c) c:send(c:recv()) end)
      local _, port = l:addr()
      local c = assert(comm.connect("127.0.0.1:" .. port))
      c:send("hi")
      assert.are.equal("hi", c:recv(1))
      l:close(); c:close()
    end)
  end)
  it("runs on Lua 5.4", function() assert.are.equal("Lua 5.4", _VERSION) end)
end)
]])
    local st, out, err = helpers.run_host({}, {
      -- /usr/bin/busted starts on lua5.1 and re-runs itself on lua5.4; under
      -- the sanitizer run, that uninstrumented 5.1 launcher is no code of ours
      argv = argv(UNSET, lua_env(), { "env", "ASAN_OPTIONS=detect_leaks=0",
                                      "busted", "--lua=lua5.4", "-o", "TAP", "my_node_spec.lua" }),
      cwd = dir,
    })
    assert.are.equal(0, st, out .. err)
    assert.truthy(out:find("ok 1 - my node answers\n", 1, true), out)
    assert.truthy(out:find("ok 2 - my node runs on Lua 5.4\n", 1, true), out)
    assert.truthy(out:find("1..2", 1, true), out)
  end)
end)
