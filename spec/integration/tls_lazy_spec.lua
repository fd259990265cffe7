-- OpenSSL is mapped only by a process that uses TLS or crypto: the core
-- loads luacomm.tls on first use (bindings/tlsmod.h). Checked in the
-- process's own /proc/self/maps, in the host and under stock lua5.4.
local helpers = require "spec.helpers"

-- Prints, one line per step, whether libssl and libcrypto are mapped:
-- at start, after plain TCP and HTTP, after the first crypto call.
local PROBE = [[
local comm = require "luacomm"
local http = require "luacomm.http"
local function mapped()
  local ssl, crypto = false, false
  for line in io.lines("/proc/self/maps") do
    if line:find("libssl.so", 1, true) then ssl = true end
    if line:find("libcrypto.so", 1, true) then crypto = true end
  end
  return tostring(ssl) .. " " .. tostring(crypto)
end
print("start " .. mapped())
local function plain()
  local l = assert(comm.listen("127.0.0.1:0"))
  local c = assert(comm.connect(("%s:%d"):format(l:addr())))
  local s = assert(l:accept())
  assert(c:send("x")); assert(s:recv() == "x")
  c:close(); s:close(); l:close()
  local srv = assert(http.serve("127.0.0.1:0", function() return 200, "ok" end))
  srv:close()
end
-- the host runs the script as a task; stock lua5.4 needs comm.run
if require("luacomm.core").running() then plain() else comm.run(plain) end
print("plain " .. mapped())
assert(#comm.crypto.hmac_sha256("key", "data") == 32)
print("crypto " .. mapped())
]]

local EXPECTED = "start false false\nplain false false\ncrypto true true\n"

describe("the TLS module", function()
  it("is loaded by the host only once TLS or crypto is used", function()
    local dir = helpers.tmpdir()
    helpers.writefile(dir .. "/probe.lua", PROBE)
    local st, out, err = helpers.run_host({ dir .. "/probe.lua" })
    assert.are.equal(0, st, err)
    assert.are.equal(EXPECTED, out)
  end)

  it("is loaded under stock lua5.4 only once TLS or crypto is used", function()
    local st, out, err = helpers.run_lua(PROBE)
    assert.are.equal(0, st, err)
    assert.are.equal(EXPECTED, out)
  end)

  it("says what is missing when it cannot be found", function()
    local st, _, err = helpers.run_host({}, {
      argv = { "lua5.4", "-e", [[
        local core = require "luacomm.core"
        package.cpath = "/nonexistent/?.so"
        local ok, e = pcall(core.random_bytes, 4)
        io.stderr:write(tostring(ok), " ", e, "\n")
        ]] },
      env = { "LUA_PATH=" .. helpers.shquote(package.path), "LUA_CPATH=" .. helpers.shquote(package.cpath) },
    })
    assert.are.equal(0, st, err)
    assert.truthy(err:find("false luacomm: TLS and crypto need the luacomm.tls module: module 'luacomm.tls' not found",
      1, true), err)
  end)
end)
