-- A node listening on a unix socket. Found while writing the fuzz
-- harnesses: start() raised in formatting its own address ("unix:" has a
-- path and no port), so no node could listen on one.
local node = require "luacomm.node"
local helpers = require "helpers"

describe("node on a unix socket", function()
  it("starts, says where it listens, and answers a peer that dials the path", function()
    local path = os.tmpname()
    os.remove(path)
    helpers.run(function()
      local a = node.new{ name = "a", listen = "unix:" .. path, heartbeat = 0.2, timeout = 1 }
      a:on("echo", function(body) return body end)
      assert(a:start())
      assert.are.equal("unix:" .. path, a.listen_addr)
      local b = node.new{ name = "b", peers = { "unix:" .. path }, heartbeat = 0.2, timeout = 1,
                          reconnect = { min = 0.01, max = 0.05 } }
      assert(b:start())
      local reply, err
      assert(helpers.wait_until(function()
        reply, err = b:request("a", "echo", "over unix", { timeout = 0.5 })
        return reply
      end, 10), err)
      assert.are.equal("over unix", reply)
      b:stop()
      a:stop()
    end)
  end)
end)
