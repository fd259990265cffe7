-- luacomm.node.auth: the proofs of the authenticated handshake match the
-- test vector in docs/PROTOCOL.md §4.1, and what the openssl command (an
-- implementation nobody here wrote) computes over the same bytes.
local auth = require "luacomm.node.auth"
local helpers = require "helpers"

local ND, NA = string.rep("\1", 32), string.rep("\2", 32)

describe("node auth proofs", function()
  it("match the documented test vector", function()
    assert.are.equal("e668f968ddb3782324843002b0f00ac2fe2a4735ba2488bfd2f64db9e9e7ffcc",
                     auth.proof("s3cret", "dialler", ND, NA, "a", "b"))
    assert.are.equal("0d66b63273458f734b646182c615892d5a2cdbafb41c0719bf0b9b74c04c0597",
                     auth.proof("s3cret", "acceptor", ND, NA, "a", "b"))
  end)

  it("are what openssl computes over the bytes PROTOCOL.md names", function()
    local dir = helpers.tmpdir()
    local data = "luacomm node auth v2 acceptor\0" .. ND .. NA .. string.pack(">s2", "dialler-x")
      .. string.pack(">s2", "acceptor-y")
    helpers.writefile(dir .. "/data", data)
    local p = assert(io.popen("openssl dgst -sha256 -hmac 'another secret' " .. helpers.shquote(dir .. "/data")))
    local out = p:read("a")
    p:close()
    os.execute("rm -rf " .. helpers.shquote(dir))
    assert.are.equal(out:match("= (%x+)"),
                     auth.proof("another secret", "acceptor", ND, NA, "dialler-x", "acceptor-y"))
  end)

  it("check in constant time, and refuse what is not a proof", function()
    local good = auth.proof("k", "dialler", ND, NA, "a", "b")
    assert.is_true(auth.check("k", good, "dialler", ND, NA, "a", "b"))
    assert.is_false(auth.check("k", good, "acceptor", ND, NA, "a", "b")) -- no reflection
    assert.is_false(auth.check("k", good, "dialler", NA, ND, "a", "b"))
    assert.is_false(auth.check("k", good, "dialler", ND, NA, "b", "a"))
    assert.is_false(auth.check("other", good, "dialler", ND, NA, "a", "b"))
    assert.is_false(auth.check("k", nil, "dialler", ND, NA, "a", "b"))
    assert.is_false(auth.check("k", good:upper(), "dialler", ND, NA, "a", "b"))
    assert.is_nil(auth.unhex("zz", 1))
    assert.is_nil(auth.unhex(string.rep("0", 63), 32))
    assert.are.equal(ND, auth.unhex(string.rep("01", 32), 32))
  end)
end)
