-- `make demo` stays working: the cluster example end to end (three real
-- nodes, SIGKILL, restart, reload, SIGTERM), driven by tools/demo.lua.
local helpers = require "helpers"

describe("cluster demo", function()
  it("runs every step and passes", function()
    local p = helpers.spawn_host({}, { argv = { "lua5.4", "tools/demo.lua" } })
    local status = p:wait(60)
    local out = p:stdout()
    if status ~= 0 then p:kill() end
    assert.are.equal(0, status, out .. p:stderr())
    assert.truthy(out:find("demo passed", 1, true))
    assert.is_nil(out:find("FAIL", 1, true))
    for _, step in ipairs{ "SIGKILL c", "restart c", "SIGHUP b", "SIGTERM every node" } do
      assert.truthy(out:find(step, 1, true), step)
    end
  end)
end)
