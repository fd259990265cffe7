-- luacomm.node in one process: its API's edges (misuse, self-addressed
-- messages, stop), and the seam — the same node code over an in-memory
-- transport, which is how a simulator will run it.
local comm = require "luacomm"
local helpers = require "helpers"
local node = require "luacomm.node"

local quiet = { debug = function() end, info = function() end, warn = function() end, error = comm.log.error }

-- An in-memory network speaking the transport seam: conns are pairs of
-- channels; cut(a, b) breaks every connection between two addresses.
local function memnet()
  local net = { listeners = {}, conns = {}, dials = 0 }
  local Conn = {}
  Conn.__index = Conn
  function Conn:send(frame)
    if self.dead then return nil, "closed" end
    self.peer_conn.inbox:put(frame)
    return true
  end
  function Conn:recv(timeout)
    if self.dead then return nil, "closed" end
    local f, err = self.inbox:get(timeout)
    if f == nil and err == "closed" then self.dead = true end
    return f, err
  end
  function Conn:close()
    if self.dead then return end
    self.dead = true
    self.inbox:close()
    self.peer_conn.inbox:close()
  end
  function Conn:closed() return self.dead == true end
  function Conn:peer() return "mem", self.peer_port end
  local function pair(a, b)
    local x = setmetatable({ inbox = comm.channel(), from = a, to = b, peer_port = 1 }, Conn)
    local y = setmetatable({ inbox = comm.channel(), from = b, to = a, peer_port = 2 }, Conn)
    x.peer_conn, y.peer_conn = y, x
    net.conns[#net.conns + 1] = x
    return x, y
  end
  net.transport = {
    listen = function(addr)
      local l = { queue = comm.channel() }
      function l.accept(self_) return self_.queue:get() end
      function l.close(self_) self_.queue:close(); net.listeners[addr] = nil end
      function l.addr() return addr:match("^(.*):(%d+)$") end
      net.listeners[addr] = l
      return l
    end,
    connect = function(addr)
      net.dials = net.dials + 1
      local l = net.listeners[addr]
      if not l then return nil, "connection refused" end
      local mine, theirs = pair("dialler", addr)
      l.queue:put(theirs)
      return mine
    end,
  }
  function net.cut_all()
    for _, c in ipairs(net.conns) do c:close() end
  end
  return net
end

describe("node API", function()
  it("raises on misuse", function()
    assert.has_error(function() node.new() end)
    assert.has_error(function() node.new{ name = "" } end)
    assert.has_error(function() node.new{ name = "a", heartbeat = 0 } end)
    assert.has_error(function() node.new{ name = "a", reconnect = { min = 2, max = 1 } } end)
    assert.has_error(function() node.new{ name = "a", peers = { 7 } } end)
    local n = node.new{ name = "a", log = quiet }
    assert.has_error(function() n:on(1, function() end) end)
    assert.has_error(function() n:on("x", "not a function") end)
    assert.has_error(function() n:on_peer(nil) end)
    helpers.run(function()
      assert(n:start())
      assert.has_error(function() n:start() end)
      assert.has_error(function() n:request("a", "x", nil, { timeout = -1 }) end)
      assert.has_error(function() n:request("a", "x", nil, { retries = 1.5 }) end)
      assert.has_error(function() n:send(nil, "x") end)
      -- not JSON (to the node itself a body is never encoded, so to another)
      assert.has_error(function() n:request("b", "x", function() end) end)
      n:stop()
    end)
  end)

  it("delivers to itself like to any node", function()
    helpers.run(function()
      local n = node.new{ name = "solo", log = quiet }
      local got = comm.channel()
      n:on("twice", function(body, msg) return { v = body * 2, from = msg.from, left = msg.deadline - comm.now() } end)
      n:on("note", function(body) got:put(body) end)
      assert(n:start())
      local r = assert(n:request("solo", "twice", 21, { timeout = 1 }))
      assert.are.same({ 42, "solo" }, { r.v, r.from })
      assert.is_true(r.left > 0.9 and r.left <= 1)
      assert.is_true(n:send("solo", "note", "to me"))
      assert.are.equal("to me", got:get(1))
      assert.are.equal(0, n:broadcast("note", "nobody else")) -- not to itself
      -- never encoded on the way: the handler gets the very table sent, and
      -- the requester the very table the handler returned
      local body = { k = "v" }
      assert.is_true(n:send("solo", "note", body))
      assert.is_true(rawequal(body, got:get(1)))
      local reply = { "mine" }
      n:on("same", function() return reply end)
      assert.is_true(rawequal(reply, n:request("solo", "same", nil, { timeout = 1 })))
      n:stop()
    end)
  end)

  it("ends pending requests with 'stopped' and refuses new ones after stop", function()
    helpers.run(function()
      local a = node.new{ name = "a", listen = "127.0.0.1:0", log = quiet }
      a:on("slow", function() comm.sleep(5) end)
      assert(a:start())
      local b = node.new{ name = "b", peers = { a.listen_addr }, log = quiet }
      assert(b:start())
      assert(helpers.wait_until(function() return (b:peers().a or {}).state == "up" end, 5))
      local task = comm.spawn(function() return b:request("a", "slow", nil, { timeout = 5 }) end)
      comm.sleep(0.05)
      b:stop()
      assert.are.same({ true, nil, "stopped" }, { task:join(1) })
      assert.are.same({ nil, "stopped" }, { b:request("a", "slow") })
      assert.are.same({ nil, "stopped" }, { b:send("a", "slow") })
      a:stop()
    end)
  end)

  it("keeps one link when two in-process nodes dial each other", function()
    helpers.run(function()
      local pa, pb = helpers.free_port(), helpers.free_port()
      local A, B = "127.0.0.1:" .. pa, "127.0.0.1:" .. pb
      local ups, base = 0, comm.stats().conns
      local a = node.new{ name = "a", listen = A, peers = { B }, log = quiet }
      local b = node.new{ name = "b", listen = B, peers = { A }, log = quiet }
      a:on_peer(function(_, s) if s == "up" then ups = ups + 1 end end)
      assert(a:start()); assert(b:start())
      assert(helpers.wait_until(function()
        return a:stats().links == 1 and b:stats().links == 1 and comm.stats().conns == base + 2
      end, 5))
      comm.sleep(0.2)
      assert.are.equal(base + 2, comm.stats().conns) -- one connection, both of its ends
      assert.are.equal(1, ups)
      a:stop(); b:stop()
    end)
  end)

  it("runs over any transport given to it (the seam)", function()
    helpers.run(function()
      local net = memnet()
      local a = node.new{ name = "a", listen = "mem:1", transport = net.transport, heartbeat = 0.05, timeout = 0.3,
                          log = quiet }
      local b = node.new{ name = "b", peers = { "mem:1" }, transport = net.transport, heartbeat = 0.05, timeout = 0.3,
                          reconnect = { min = 0.01, max = 0.05 }, log = quiet }
      local events = {}
      b:on_peer(function(name, s) events[#events + 1] = name .. " " .. s end)
      a:on("echo", function(body) return body end)
      assert(a:start()); assert(b:start())
      assert(helpers.wait_until(function() return (b:peers().a or {}).state == "up" end, 2))
      assert.are.equal("over memory", b:request("a", "echo", "over memory"))
      assert(helpers.wait_until(function() return b:peers().a.rtt end, 2))
      -- the network fails: b sees a down, redials, and sees it up again
      net.cut_all()
      assert(helpers.wait_until(function() return #events >= 3 end, 2))
      assert.are.same({ "a up", "a down", "a up" }, events)
      assert.are.equal("again", b:request("a", "echo", "again"))
      assert.is_true(net.dials >= 2)
      a:stop(); b:stop()
    end)
  end)

  it("draws its jitter from the clock it is given", function()
    helpers.run(function()
      local draws = 0
      local clock = setmetatable({ random = function() draws = draws + 1; return 0.5 end }, { __index = node.clock })
      local n = node.new{ name = "lonely", peers = { "127.0.0.1:" .. helpers.free_port() }, clock = clock,
                          reconnect = { min = 0.01, max = 0.02 }, log = quiet }
      assert(n:start())
      assert(helpers.wait_until(function() return draws >= 3 end, 2))
      n:stop()
    end)
  end)
end)
