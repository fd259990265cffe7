-- The tcp and frames specs again, with core.max_io(1): every read and every
-- write moves a single byte, so each frame header and payload arrives in
-- pieces and every partial-frame path (header split at each byte, payload
-- split, readline without its end yet, read(n) short) runs — libevent's
-- own "mockeagain" (STYLE: bufferevent_set_max_single_read/write).
--
-- The files see "bytewise" as their chunk argument and shrink their big
-- sizes accordingly; frames_spec.lua skips its 16 MiB frames in this mode,
-- and backpressure_spec.lua (200 MiB) is not re-run here: a byte at a time
-- those take minutes, and the full-speed runs cover them.
local core = require "luacomm.core"

local function include(path)
  local chunk = assert(loadfile(path, "t", _ENV)) -- busted's describe/it live in our _ENV
  chunk("bytewise")
end

describe("with core.max_io(1)", function()
  setup(function() core.max_io(1) end)
  teardown(function() core.max_io(0) end)

  it("really moves one byte at a time", function()
    local comm = require "luacomm"
    local helpers = require "helpers"
    assert.are.equal(1, core.max_io())
    helpers.run(function()
      -- The receiving side pauses its input at its high-water mark, 1 byte
      -- here, when nobody reads: one read of up to 64 KiB would take the
      -- whole 7-byte frame at once, one read of one byte leaves exactly 1.
      local l, addr = helpers.listen({ hwm = 1 })
      local c = assert(comm.connect(addr))
      local s = assert(l:accept(5))
      c:send("xyz")
      assert.truthy(helpers.wait_until(function() return s:stats().pending_in >= 1 end, 5, 0.001))
      comm.sleep(0.02)
      assert.are.equal(1, s:stats().pending_in)
      assert.are.equal("xyz", s:recv(5))
      c:close(); s:close(); l:close()
    end)
  end)

  include("spec/unit/tcp_spec.lua")
  include("spec/unit/frames_spec.lua")
end)
