-- comm.crypto (OpenSSL underneath) and conn:set_max_frame: the pieces the
-- authenticated node handshake is built from.
local comm = require "luacomm"
local helpers = require "helpers"

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

describe("comm.crypto", function()
  it("computes HMAC-SHA256 as RFC 4231 says", function()
    assert.are.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                     hex(comm.crypto.hmac_sha256("Jefe", "what do ya want for nothing?")))
    assert.are.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                     hex(comm.crypto.hmac_sha256(string.rep("\11", 20), "Hi There")))
  end)

  it("gives fresh random bytes, and compares in constant time", function()
    local a, b = comm.crypto.random_bytes(32), comm.crypto.random_bytes(32)
    assert.are.equal(32, #a)
    assert.are_not.equal(a, b)
    assert.are.equal("", comm.crypto.random_bytes(0))
    assert.has_error(function() comm.crypto.random_bytes(-1) end)
    assert.has_error(function() comm.crypto.random_bytes(4096) end)
    assert.is_true(comm.crypto.equal_consttime(a, a .. ""))
    assert.is_false(comm.crypto.equal_consttime(a, b))
    assert.is_false(comm.crypto.equal_consttime("ab", "abc"))
    assert.has_error(function() comm.crypto.hmac_sha256(nil, "x") end)
  end)
end)

describe("conn:set_max_frame", function()
  it("lowers and raises the largest frame a connection reads", function()
    helpers.run(function()
      local a, b, l1 = helpers.pair()
      assert.is_true(b:set_max_frame(10))
      assert(a:send(string.rep("x", 10)))
      assert.are.equal(10, #assert(b:recv(2)))
      assert(a:send(string.rep("x", 11)))
      assert.are.same({ nil, "frame too large" }, { b:recv(2) })
      assert.are.same({ nil, "closed" }, { b:set_max_frame(5) }) -- the core closed it
      local c, d, l2 = helpers.pair()
      d:set_max_frame(4)
      d:set_max_frame(100)
      assert(c:send(string.rep("y", 50)))
      assert.are.equal(50, #assert(d:recv(2)))
      assert.has_error(function() d:set_max_frame(-1) end)
      helpers.close_all(a, b, c, d, l1, l2)
    end)
  end)
end)
