-- Attacks on a node cluster from a raw socket, as an attacker on loopback
-- would make them (the CONTRACT §8 red-team list, node side): real node
-- processes a - b - c without a secret, a spec client "t" that must be
-- served throughout, and a hand-made peer that lies. Each attack once
-- broke a node or the cluster; none may now.
local comm = require "luacomm"
local helpers = require "helpers"
local cluster = require "fixtures.node.cluster"
local envelope = require "luacomm.node.envelope"

local json = comm.json
local MAX_NODES, MAX_INFLIGHT = 64, 100

describe("node red team", function()
  local cl

  setup(function()
    cl = cluster.start({ { name = "a", peers = { "b" } }, { name = "b", peers = { "c" } }, { name = "c" } },
                       { heartbeat = 0.2, timeout = 2, handshake_timeout = 0.5, max_nodes = MAX_NODES,
                         max_inflight = MAX_INFLIGHT },
                       { { "a", "up b" }, { "c", "up b" } })
  end)

  teardown(function() cl:stop_clean() end)

  local function with_client(fn) cl:with_client({ "a" }, fn) end
  local function stats(t, name) return assert(t:request(name, "stats", nil, { timeout = 2, retries = 2 })) end

  -- n requests from t to c (routed through a and b): how many came back.
  local function served(t, n)
    local ok = 0
    for i = 1, n do
      if t:request("c", "echo", i, { timeout = 1, retries = 2 }) == i then ok = ok + 1 end
    end
    return ok
  end

  local expect = cluster.expect

  -- A raw peer of `to`, linked under `name`: the conn and the peer's welcome.
  local function raw_peer(to, name, inc)
    local c = assert(comm.connect(cl.addr[to]))
    assert(c:send(json.encode{ kind = "hello", v = 2, node = name, inc = inc or 1 }))
    local w = assert(expect(c, "welcome"))
    assert(cl:wait_line(to, "up " .. name))
    return c, w
  end

  it("is not poisoned by numbers out of range (1e999 in hello, links, ping, req)", function()
    with_client(function(t)
      assert.are.equal(30, served(t, 30))
      local before = stats(t, "b").node
      -- a hello with an infinite incarnation is refused at the door
      local h = assert(comm.connect(cl.addr.b))
      h:send('{"kind":"hello","v":2,"node":"inf","inc":1e999}')
      assert.are.equal("expected hello", assert(expect(h, "reject")).reason)
      h:close()
      -- on an established link, each poisoned frame is dropped alone
      local c = raw_peer("b", "poisoner")
      for _, f in ipairs{
        '{"kind":"links","origin":"poisoner","epoch":1e999,"seq":1,"links":[]}',
        '{"kind":"links","origin":"elsewhere","epoch":1e999,"seq":1,"links":[]}',
        '{"kind":"links","origin":"poisoner","epoch":1,"seq":1e999,"links":[{"node":"b","inc":1e999}]}',
        '{"kind":"ping","t":1e999}',
        '{"kind":"ping","t":-1e999}',
        '{"kind":"req","src":"poisoner","dst":"b","type":"echo","hops":0,"id":1e999,"ttl":1,"inc":1}',
        '{"kind":"req","src":"poisoner","dst":"b","type":"echo","hops":0,"id":1,"ttl":1e999,"inc":1}',
      } do assert(c:send(f)) end
      -- the task reading that link is alive: it still answers
      assert(c:send(json.encode{ kind = "req", src = "poisoner", dst = "b", type = "echo", id = 2, inc = 1,
                                 hops = 0, ttl = 2, body = "alive" }))
      local rep = assert(expect(c, "rep"))
      assert.are.equal("alive", envelope.body(rep))
      local after = stats(t, "b").node
      assert.are.equal(before.bad_envelope + 8, after.bad_envelope)
      -- new links still sync (announcing stored news used to raise) and route
      local t2 = cl:client("late", { "b" })
      assert.are.equal("ok", t2:request("c", "echo", "ok"))
      t2:stop()
      c:close()
      assert.are.equal(30, served(t, 30))
    end)
  end)

  it("does not let a hello claiming a live node's name drop that node's link", function()
    with_client(function(t)
      local downs = cl:count("b", "down c")
      for i = 1, 5 do
        local c = assert(comm.connect(cl.addr.b))
        -- "a newer life of c": the real c's link once was dropped for it
        c:send(json.encode{ kind = "hello", v = 2, node = "c", inc = math.floor(comm.time() * 1000) + i })
        assert.are.equal("duplicate", assert(expect(c, "reject")).reason)
        c:close()
      end
      assert.are.equal(downs, cl:count("b", "down c"))
      assert.are.equal(30, served(t, 30))
    end)
  end)

  it("relays a body without reading it: only its destination finds it bad", function()
    with_client(function(t)
      local b0, c0 = stats(t, "b").node, stats(t, "c").node
      local c = raw_peer("b", "sloppy")
      c:send('{"kind":"msg","src":"sloppy","dst":"c","type":"note","hops":0}\n{"not":"json"')
      assert(helpers.wait_until(function() return stats(t, "c").node.bad_json > c0.bad_json end, 5))
      local b1 = stats(t, "b").node
      assert.are.equal(b0.bad_json, b1.bad_json)
      assert.is_true(b1.relayed > b0.relayed)
      c:close()
    end)
  end)

  it("drops messages whose src is not the link they came on, and forged relay answers", function()
    with_client(function(t)
      local runs, notes = t:request("b", "count"), #t:request("b", "notes")
      local before = stats(t, "b").node
      local c = raw_peer("b", "forger")
      -- hops 0 means "from me": it must be the link's own peer
      c:send(envelope.encode{ kind = "msg", src = "c", dst = "b", type = "note", hops = 0, body = "from c?" })
      c:send(envelope.encode{ kind = "req", src = "c", dst = "b", type = "work", id = 1, inc = 1, hops = 0, ttl = 2 })
      -- a relay's answer may only say "unreachable", never carry a body
      c:send(envelope.encode{ kind = "rep", src = "c", dst = "b", id = 1, hops = 0, by = "forger", body = "lies" })
      -- its own name is fine
      c:send(envelope.encode{ kind = "msg", src = "forger", dst = "b", type = "note", hops = 0, body = "mine" })
      assert(cl:wait_line("b", "note forger"))
      local after = stats(t, "b").node
      assert.are.equal(before.bad_envelope + 3, after.bad_envelope)
      assert.are.equal(runs, t:request("b", "count"))
      assert.are.equal(notes + 1, #t:request("b", "notes"))
      assert.falsy(cl:stdout("b"):find("from c?", 1, true))
      c:close()
    end)
  end)

  it("bounds what fake nodes can claim: announcements, names, routing table", function()
    with_client(function(t)
      local before = stats(t, "b").node
      local c, w = raw_peer("b", "liar")
      -- 2,000 nodes in one announcement: over the list limit
      local many = {}
      for i = 1, 2000 do many[i] = { node = "fake" .. i, inc = 1 } end
      c:send(envelope.encode_links("liar", 1, 2, many))
      -- 1,000 in its own list, and 1,000 fake origins each confirming it
      local some = {}
      for i = 1, 1000 do some[i] = { node = "fake" .. i, inc = 1 } end
      c:send(envelope.encode_links("liar", 1, 3, some))
      for i = 1, 1000 do c:send(envelope.encode_links("fake" .. i, 1, 1, { { node = "liar", inc = 1 } })) end
      -- a name of 1 MiB, and one of 1,000 bytes
      c:send(envelope.encode_links(string.rep("n", 1024 * 1024), 1, 1, {}))
      c:send(envelope.encode_links(string.rep("m", 1000), 1, 1, {}))
      -- news of b's own neighbour c, for a life far in the future
      c:send(envelope.encode_links("c", w.inc * 1000, 1, {}))
      assert(helpers.wait_until(function()
        local s = stats(t, "b").node
        return s.over_limit > before.over_limit and s.bad_envelope >= before.bad_envelope + 3
      end, 5))
      local after = stats(t, "b").node
      assert.is_true(after.known_nodes <= MAX_NODES, after.known_nodes)
      -- a broadcast from b reaches no more than it may know
      local n = assert(t:request("b", "bcast", { type = "noop" }))
      assert.is_true(n <= MAX_NODES, n)
      c:close()
      assert(cl:wait_line("b", "down liar"))
      -- the real c is reachable as ever
      assert.are.equal(30, served(t, 30))
    end)
  end)

  it("refuses news of a real node with a huge epoch, and routing survives the liar's leaving", function()
    with_client(function(t)
      local before = stats(t, "a").node
      local c = raw_peer("a", "epochs")
      -- a is not c's neighbour: it learns of c through b; an epoch from the
      -- future (the incarnation of a life ten days on) is refused
      local future = math.floor(comm.time() * 1000) + 10 * 86400 * 1000
      c:send(envelope.encode_links("c", future, 1, {}))
      c:send(envelope.encode_links("b", future, 1, {}))
      assert(helpers.wait_until(function() return stats(t, "a").node.bad_envelope >= before.bad_envelope + 1 end, 5))
      c:close()
      assert(cl:wait_line("a", "down epochs"))
      assert.are.equal(30, served(t, 30))
      assert.is_table(assert(t:request("a", "routes")).c)
    end)
  end)

  it("bounds the requests of one link in flight instead of a task for each", function()
    with_client(function(t)
      local c = raw_peer("b", "flooder")
      local tasks0 = stats(t, "b").comm.tasks
      -- 20,000 slow requests whose replies the flooder never reads
      local flood = comm.spawn(function()
        for i = 1, 20000 do
          if not c:send(envelope.encode{ kind = "req", src = "flooder", dst = "b", type = "sleep", id = i, inc = 1,
                                         hops = 0, ttl = 30, body = { s = 2, v = i } }) then return end
        end
      end)
      assert(helpers.wait_until(function() return stats(t, "b").node.throttled > 0 end, 10))
      local s = stats(t, "b")
      assert.is_true(s.comm.tasks < tasks0 + MAX_INFLIGHT + 50, s.comm.tasks)
      -- everyone else is served meanwhile
      assert.are.equal(20, served(t, 20))
      assert.are.equal("b here", t:request("b", "echo", "b here"))
      flood:cancel()
      c:close()
      assert(cl:wait_line("b", "down flooder"))
    end)
  end)

  it("forgets requesters: 20,000 distinct src names leave at most max_nodes behind", function()
    with_client(function(t)
      local heap0 = t:request("b", "heap")
      local c = raw_peer("b", "manyheads")
      local reader = comm.spawn(function() while c:recv(5) do end end) -- takes the replies
      for i = 1, 20000 do
        assert(c:send(envelope.encode{ kind = "req", src = "head" .. i, dst = "b", type = "echo", id = 1, inc = 1,
                                       hops = 1, ttl = 5, body = i }))
      end
      assert(helpers.wait_until(function() return stats(t, "b").node.served >= 20000 end, 20))
      assert.is_true(stats(t, "b").node.dedup_senders <= MAX_NODES)
      -- 20,000 names once left 13.8 MB of live heap behind
      local grown = t:request("b", "heap") - heap0
      assert.is_true(grown < 2048, grown .. " KiB")
      reader:cancel()
      c:close()
      -- and as many distinct peers, linked one after another, leave no more records than that
      for i = 1, 150 do
        local p = raw_peer("b", "visitor" .. i)
        p:close()
      end
      local peers = 0
      for _ in pairs(assert(t:request("b", "peers"))) do peers = peers + 1 end
      assert.is_true(peers <= MAX_NODES + 4, peers)
      assert.are.equal(20, served(t, 20))
    end)
  end)
end)
