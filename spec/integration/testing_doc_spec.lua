-- docs/TESTING.md's worked example, run as a user would: its service and
-- its spec are taken from the page, written to a fresh folder, and run by
-- busted on Lua 5.4 against this build.
local helpers = require "helpers"

describe("docs/TESTING.md", function()
  it("its worked example passes under busted", function()
    local doc = assert(helpers.readfile(helpers.ROOT .. "/docs/TESTING.md"))
    local blocks = {}
    for code in doc:gmatch("```lua\n(.-)```") do blocks[#blocks + 1] = code end
    local service, spec = blocks[1], blocks[2]
    assert.truthy(service:find("function M.start", 1, true))
    assert.truthy(spec:find("describe(", 1, true))
    local dir = helpers.tmpdir()
    helpers.writefile(dir .. "/echo.lua", service)
    helpers.writefile(dir .. "/echo_spec.lua", spec)
    local root = helpers.ROOT:sub(1, 1) == "/" and helpers.ROOT or (os.getenv("PWD") .. "/" .. helpers.ROOT)
    local bin = helpers.BIN:sub(1, 1) == "/" and helpers.BIN or (os.getenv("PWD") .. "/" .. helpers.BIN)
    local lib = bin:gsub("/luacomm$", "/lib")
    local status, out, err = helpers.run_host({}, {
      argv = { "lua5.4", "/usr/bin/busted", "-o", "TAP", "echo_spec.lua" },
      cwd = dir,
      env = { "LUACOMM_BIN=" .. helpers.shquote(bin),
              "LUA_PATH=" .. helpers.shquote(root .. "/scripts/?.lua;;"),
              "LUA_CPATH=" .. helpers.shquote(lib .. "/?.so;;") },
      timeout = 60,
    })
    assert(status == 0, "busted on the example failed:\n" .. out .. err)
    assert.truthy(out:find("ok 1 - echo.lua answers", 1, true), out)
  end)
end)
