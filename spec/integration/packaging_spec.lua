-- Packaging conventions: the man page says what the command does (checked
-- against its --help and the environment variables the C code reads), it
-- renders without a warning; `luarocks make` builds and installs the host
-- and the module from a checkout; a plain `busted` in the repo runs on 5.4.
local helpers = require "helpers"

-- The tools run here (man, git, luarocks, a host luarocks built) are not
-- ours: under the sanitizer run they must not inherit its preloads.
local function sh(cmd)
  return "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS sh -c " .. helpers.shquote(cmd)
end
local PLAIN_ARGV = { "env", "-u", "LD_PRELOAD", "-u", "ASAN_OPTIONS", "-u", "UBSAN_OPTIONS" }
local function plain(argv)
  local t = {}
  for _, a in ipairs(PLAIN_ARGV) do t[#t + 1] = a end
  for _, a in ipairs(argv) do t[#t + 1] = a end
  return t
end

local function lines(cmd)
  local p = assert(io.popen(cmd))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

-- The man page as man renders it, and whatever man and groff complained of.
local function render()
  local err = helpers.tmpdir() .. "/err"
  local out = table.concat(lines(sh(("MANWIDTH=80 man --warnings -l %s 2>%s")
    :format(helpers.shquote(helpers.ROOT .. "/docs/luacomm.1"), helpers.shquote(err)))), "\n")
  return out, helpers.readfile(err) or ""
end

describe("the man page luacomm(1)", function()
  it("renders with man -l without a warning, with every section a man page needs", function()
    local out, err = render()
    assert.are.equal("", err)
    for _, sec in ipairs{ "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "EXIT STATUS",
                          "ENVIRONMENT", "FILES", "SEE ALSO" } do
      assert.truthy(out:find("\n" .. sec .. "\n", 1, true), "no section " .. sec)
    end
  end)

  it("lists every option of luacomm --help and every variable the C code reads", function()
    local out = render()
    local source = helpers.readfile(helpers.ROOT .. "/docs/luacomm.1")
    local help = lines(helpers.shquote(helpers.BIN) .. " --help 2>/dev/null")
    local n = 0
    for _, l in ipairs(help) do
      local col = l:match("^%s+(%-.-)%s%s") or l:match("^%s+(%-%-)$") -- "-c, --check", "--"
      for opt in (col or ""):gmatch("%-%-?[%w-]*") do
        n = n + 1
        -- in the page's source a dash is written \- (so it renders as a minus)
        local roff = opt:gsub("%-", "\\-")
        assert.truthy(source:find("\n.TP\n.B[IR]? " .. roff:gsub("%p", "%%%0") .. "[ \n]", 1)
                      or source:find(".BR " .. roff .. ' ", "', 1, true) or source:find('", " ' .. roff .. "\n", 1, true),
                      "option " .. opt .. " of --help has no entry in the man page")
      end
    end
    assert.is_true(n >= 10, "--help listed only " .. n .. " options")
    local vars = lines("grep -oh 'getenv(\"[A-Z_0-9]*\")' " .. helpers.shquote(helpers.ROOT) .. "/runtime/*.c "
                       .. helpers.shquote(helpers.ROOT) .. "/bindings/*.c")
    assert.is_true(#vars >= 2)
    for _, v in ipairs(vars) do
      local name = v:match('"(.-)"')
      assert.truthy(out:find(name, 1, true), "environment variable " .. name .. " is not in the man page")
    end
    for _, signal in ipairs{ "SIGHUP", "SIGTERM", "SIGINT", "SIGPIPE" } do
      assert.truthy(out:find(signal, 1, true), signal)
    end
  end)
end)

describe("luarocks make", function()
  it("builds and installs the host and the module from a checkout into a tree", function()
    -- a copy of the checkout, so the build does not touch the one under test
    local src, tree = helpers.tmpdir() .. "/src", helpers.tmpdir() .. "/tree"
    local root = helpers.shquote(helpers.ROOT)
    assert(os.execute(sh(("mkdir -p %s && cd %s && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t %s")
      :format(helpers.shquote(src), root, helpers.shquote(src)))))
    local rockspec = lines("cd " .. root .. " && ls *.rockspec")[1]
    assert.truthy(rockspec, "no rockspec in the repository")
    local log = helpers.tmpdir() .. "/luarocks.log"
    local ok = os.execute(sh(("cd %s && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u B luarocks --lua-version 5.4 --tree %s make %s >%s 2>&1")
      :format(helpers.shquote(src), helpers.shquote(tree), rockspec, helpers.shquote(log))))
    assert(ok, "luarocks make failed:\n" .. (helpers.readfile(log) or ""))
    -- the installed host finds the installed library, and runs a node
    local st, out, err = helpers.run_host({}, {
      argv = plain{ "-u", "LUA_PATH", "-u", "LUA_CPATH", "-u", "LUA_PATH_5_4", "-u", "LUA_CPATH_5_4",
               tree .. "/bin/luacomm", "-e", [[
        local node = require "luacomm.node"
        local n = node.new{ name = "a", listen = "127.0.0.1:0" }
        assert(n:start()); n:stop()
        print(debug.getinfo(require("luacomm").run, "S").source, require("luacomm.testing")._VERSION)]] },
      cwd = helpers.tmpdir(),
    })
    assert.are.equal(0, st, err)
    assert.are.equal("@" .. tree .. "/bin/../share/lua/5.4/luacomm.lua\t0.1.0\n", out)
    -- stock lua5.4 loads the C module from the tree
    st, out, err = helpers.run_host({}, {
      argv = plain{ "LUA_PATH=" .. tree .. "/share/lua/5.4/?.lua;;", "LUA_CPATH=" .. tree .. "/lib/lua/5.4/?.so;;",
               "lua5.4", "-e", 'print(package.searchpath("luacomm.core", package.cpath)); require "luacomm"' },
      cwd = helpers.tmpdir(),
    })
    assert.are.equal(0, st, err)
    assert.are.equal(tree .. "/lib/lua/5.4/luacomm/core.so\n", out)
    -- and luarocks knows it
    local list = table.concat(lines(sh(("luarocks --lua-version 5.4 --tree %s list --porcelain 2>&1")
      :format(helpers.shquote(tree)))), "\n")
    assert.truthy(list:find("luacomm\t0.1.0-1", 1, true), list)
  end)
end)

describe("a plain busted in the repository", function()
  it("runs the specs on Lua 5.4 (the .busted file), with no --lua", function()
    local dir = helpers.tmpdir()
    helpers.writefile(dir .. "/version_spec.lua", [[
describe("the Lua busted runs", function()
  it("is 5.4 and finds the in-tree library", function()
    assert.are.equal("Lua 5.4", _VERSION)
    assert.truthy(package.searchpath("luacomm.node", package.path):find("^scripts/luacomm/node"))
  end)
end)
]])
    -- .busted's cpath names build/lib; a sanitizer run builds only its own
    -- flavour, so point at the module of the build under test (not --lua).
    local lib = helpers.BIN:gsub("/luacomm$", "/lib/?.so")
    local st, out, err = helpers.run_host({}, {
      -- the module keeps the run's preloads; busted's lua5.1 launcher is
      -- no code of ours, so no leak check on it (as in install_spec)
      argv = { "env", "ASAN_OPTIONS=detect_leaks=0", "busted", "--cpath=" .. lib, "-o", "TAP",
               dir .. "/version_spec.lua" },
    })
    assert.are.equal(0, st, out .. err)
    assert.truthy(out:find("ok 1 - the Lua busted runs is 5.4", 1, true), out)
  end)
end)
