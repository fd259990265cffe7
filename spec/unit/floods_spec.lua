-- Floods that were already survived, kept so: 64 KiB UDP datagrams by the
-- thousand, and JSON nested 100,000 deep. The process goes on serving.
local comm = require "luacomm"
local helpers = require "helpers"

describe("floods", function()
  it("2,000 datagrams of 65,507 bytes: whole or dropped by the kernel, never cut; then a round trip works", function()
    helpers.run(function()
      local rx = assert(comm.udp("127.0.0.1:0"))
      local host, port = rx:addr()
      local addr = host .. ":" .. port
      local tx = assert(comm.udp())
      local big = ("u"):rep(65507)
      local got, bad = 0, 0
      local reader = comm.spawn(function()
        while true do
          local d = rx:recvfrom(0.5)
          if not d then return end
          if d == "ping" then return "ping" end
          if #d == #big then got = got + 1 else bad = bad + 1 end
        end
      end)
      for i = 1, 2000 do
        tx:sendto(big, addr)
        if i % 50 == 0 then comm.yield() end
      end
      assert(helpers.wait_until(function() return got > 0 end, 5))
      local echo = comm.udp()
      assert(echo:sendto("ping", addr))
      local ok, last = reader:join(10)
      assert.is_true(ok)
      assert.is_true(last == "ping" or last == nil)
      assert.are.equal(0, bad)
      assert.is_true(got > 0)
      rx:close(); tx:close(); echo:close()
    end)
  end)

  it("JSON arrays nested 100,000 deep: decode says no, and raises nothing", function()
    local deep = ("["):rep(100000) .. ("]"):rep(100000)
    local v, err = comm.json.decode(deep)
    assert.is_nil(v)
    assert.matches("nested", err)
    assert.are.same({ 1 }, comm.json.decode("[1]"))
  end)
end)
