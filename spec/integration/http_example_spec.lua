-- examples/http stays working: the gateway in front of three cluster nodes,
-- driven with curl by tools/demo_http.lua (`make demo-http`).
local helpers = require "helpers"

describe("http gateway example", function()
  it("answers every curl of the walk-through", function()
    local p = helpers.spawn_host({}, { argv = { "lua5.4", "tools/demo_http.lua" } })
    local status = p:wait(60)
    local out = p:stdout()
    if status ~= 0 then p:kill() end
    assert.are.equal(0, status, out .. p:stderr())
    assert.truthy(out:find("demo-http passed", 1, true))
    assert.is_nil(out:find("FAIL", 1, true))
    for _, step in ipairs{ "PUT /kv/colour stored on", "GET /kv/missing is 404", "is 400",
                           "every node has both keys", "passes promtool", "an HTML table" } do
      assert.truthy(out:find(step, 1, true), step)
    end
  end)
end)
