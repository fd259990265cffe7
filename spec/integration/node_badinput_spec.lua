-- Bad input from a peer, over raw sockets against a real node process "b":
-- every kind is counted and logged, none crashes the node or reaches a
-- handler, and the node keeps serving.
local comm = require "luacomm"
local cluster = require "fixtures.node.cluster"
local envelope = require "luacomm.node.envelope"

local json = comm.json

describe("node bad input", function()
  local cl

  setup(function()
    cl = cluster.start({ { name = "b" } }, { heartbeat = 0.2, timeout = 2, handshake_timeout = 0.3,
                                              max_frame = 65536 })
  end)

  teardown(function() cl:stop_clean() end)

  local function with_client(fn) cl:with_client({ "b" }, fn) end

  local function stats(t) return assert(t:request("b", "stats")).node end

  -- The counters that grew between two stats() results.
  local function grown(before, after)
    local d = {}
    for k, v in pairs(after) do
      local gauge = k == "served" or k == "dedup" or k == "dedup_senders"
      if type(v) == "number" and v > (before[k] or 0) and not gauge then d[k] = v - before[k] end
    end
    return d
  end

  local function raw()
    return assert(comm.connect(cl.addr.b))
  end

  -- The next frame of kind `kind`, its body decoded.
  local function expect(c, kind)
    local env, err = cluster.expect(c, kind)
    if env then env.body = envelope.body(env) end
    return env, err
  end

  local function handshake(c, name)
    assert(c:send(json.encode{ kind = "hello", v = 2, node = name, inc = 1 }))
    return assert(expect(c, "welcome"))
  end

  it("refuses a first frame that is not a hello, counting what it was", function()
    with_client(function(t)
      local cases = {
        { "this is not JSON", "bad_json" },
        { '{"kind":"ping","t":1}', "bad_handshake" },
        { '{"kind":"hello","v":1}', "bad_envelope" },
        { '{"kind":"hello","v":0,"node":"old","inc":1}', "bad_handshake" },
        { '{"kind":"telepathy"}', "unknown_kind" },
      }
      for _, case in ipairs(cases) do
        local before = stats(t)
        local c = raw()
        c:send(case[1])
        local rej = assert(expect(c, "reject"))
        assert.are.equal("b", rej.node)
        assert.is_string(rej.reason)
        assert.are.same({ nil, "closed" }, { c:recv(2) })
        c:close()
        assert.are.same({ [case[2]] = 1, bad_input = 1 }, grown(before, stats(t)), case[1])
      end
    end)
  end)

  it("drops a connection whose handshake never comes, after handshake_timeout", function()
    with_client(function(t)
      local before = stats(t)
      local c = raw()
      local t0 = comm.now()
      assert.are.same({ nil, "closed" }, { c:recv(3) })
      local took = comm.now() - t0
      assert.is_true(took > 0.25 and took < 1, "dropped after " .. took)
      c:close()
      assert.are.same({ handshake_timeout = 1, bad_input = 1 }, grown(before, stats(t)))
    end)
  end)

  it("drops a connection announcing a frame over the limit", function()
    with_client(function(t)
      local before = stats(t)
      local c = raw()
      c:write(string.pack(">I4", 0x7fffffff))
      assert.are.same({ nil, "closed" }, { c:recv(2) })
      c:close()
      assert.are.same({ frame_too_large = 1, bad_input = 1 }, grown(before, stats(t)))
    end)
  end)

  it("counts garbage on an established link, keeps the link, and no handler sees it", function()
    with_client(function(t, serial)
      local name = "raw" .. serial
      local c = raw()
      local w = handshake(c, name)
      assert.are.equal("b", w.node)
      assert.are.equal(2, w.v)
      assert.is_number(w.inc)
      assert(cl:wait_line("b", "up " .. name))
      local before = stats(t)
      local runs = t:request("b", "count")
      local notes = #assert(t:request("b", "notes"))
      local garbage = {
        "not JSON at all",
        "[1,2,3]",
        '{"kind":"msg","src":"x","dst":"b","body":1}',                     -- no type, no hops
        '{"kind":"req","src":"x","dst":"b","type":"work","hops":0}',       -- no id, ttl, inc
        '{"kind":"rep","src":"x","dst":"b","id":"seven","hops":0}',
        '{"kind":"links","origin":"x","epoch":1,"seq":1,"links":"all"}',
        '{"kind":"telepathy","body":1}',
        json.encode{ kind = "hello", v = 2, node = name, inc = 1 },
        '{"kind":"challenge","node":"x","nonce":"00"}',
        '{"kind":"auth","mac":"00"}',
        -- numbers out of range: each once killed the task reading the link
        '{"kind":"ping","t":1e999}',
        '{"kind":"req","src":"x","dst":"b","type":"work","hops":0,"id":1e999,"ttl":1,"inc":1}',
      }
      for _, g in ipairs(garbage) do assert(c:send(g)) end
      -- time is up: dropped on receipt, and when it should be relayed
      assert(c:send(json.encode{ kind = "req", src = name, dst = "b", type = "work", id = 1, inc = 1,
                                 hops = 0, ttl = 0 }))
      assert(c:send(json.encode{ kind = "req", src = name, dst = t.name, type = "work", id = 2, inc = 1,
                                 hops = 0, ttl = -1 }))
      -- a good message with a field from the future still gets through
      assert(c:send(json.encode{ kind = "msg", src = name, dst = "b", type = "note", hops = 0,
                                 body = "good", colour = "blue" }))
      assert(cl:wait_line("b", "note " .. name))
      -- and the link still carries requests
      assert(c:send(json.encode{ kind = "req", src = name, dst = "b", type = "echo", id = 3, inc = 1,
                                 hops = 0, ttl = 2, body = "still here" }))
      local rep = assert(expect(c, "rep"))
      assert.are.same({ 3, "still here", "b" }, { rep.id, rep.body, rep.src })
      assert.are.same({ bad_json = 1, bad_envelope = 10, unknown_kind = 1, bad_input = 12, expired = 2,
                        received = 1 },
                      grown(before, stats(t)))
      assert.are.equal(runs, t:request("b", "count"))
      assert.are.equal(notes + 1, #t:request("b", "notes"))
      -- a frame over the limit ends the link: b reports the peer down
      c:write(string.pack(">I4", 65537))
      assert(cl:wait_line("b", "down " .. name))
      c:close()
      local after = stats(t)
      assert.are.equal(before.frame_too_large + 1, after.frame_too_large)
    end)
  end)

  it("keeps serving, and says what it dropped in its log", function()
    with_client(function(t)
      assert.are.equal("ok", t:request("b", "echo", "ok"))
      assert.is_nil(cl.procs.b:status())
      local log = cl:stderr("b")
      assert.truthy(log:find("bad input from [^\n]*bad_json", 1))
      assert.truthy(log:find("bad input from [^\n]*handshake_timeout", 1))
      assert.truthy(log:find("bad input from [^\n]*frame_too_large", 1))
      assert.truthy(log:find("bad input from [^\n]*unknown_kind %(telepathy%)", 1))
    end)
  end)
end)
