-- luacomm.node.envelope: what gets past the reader. Every kind of bad
-- envelope must be named, never raised.
local envelope = require "luacomm.node.envelope"
local comm = require "luacomm"

local function req(over)
  local e = { kind = "req", src = "a", dst = "b", type = "get", id = 3, inc = 1700000000000,
              hops = 0, ttl = 1.5, body = { k = "x" } }
  for k, v in pairs(over or {}) do e[k] = v end
  return comm.json.encode(e)
end

describe("node envelopes", function()
  it("decodes a good request, unknown fields and all", function()
    local env = assert(envelope.decode(req{ future_field = { 1, 2 } }))
    assert.are.equal("req", env.kind)
    assert.are.equal("x", env.body.k)
    assert.are.equal(1.5, env.ttl)
  end)

  it("names what is wrong instead of raising", function()
    local cases = {
      { "{not json", "bad_json" },
      { "", "bad_json" },
      { "[1,2,3]", "bad_envelope" },
      { "42", "bad_envelope" },
      { '{"src":"a"}', "bad_envelope" },
      { '{"kind":7}', "bad_envelope" },
      { '{"kind":"gossip"}', "unknown_kind" },
      { req{ type = false }, "bad_envelope" },
      { req{ id = 0 }, "bad_envelope" },
      { req{ id = 1.5 }, "bad_envelope" },
      { req{ hops = -1 }, "bad_envelope" },
      { req{ src = "" }, "bad_envelope" },
      { req{ ttl = "soon" }, "bad_envelope" },
      { '{"kind":"links","origin":"a","epoch":1,"seq":1,"links":[1]}', "bad_envelope" },
      { '{"kind":"links","origin":"a","epoch":1,"seq":1,"links":["b"]}', "bad_envelope" },
      { '{"kind":"links","origin":"a","epoch":1,"seq":1,"links":[{"node":"b"}]}', "bad_envelope" },
      { '{"kind":"links","origin":"a","epoch":1,"seq":1,"links":{"x":"b"}}', "bad_envelope" },
      { '{"kind":"hello","v":1,"inc":1}', "bad_envelope" },
      { '{"kind":"ping"}', "bad_envelope" },
      { '{"kind":"ping","t":1,"ls":-1}', "bad_envelope" },
      { '{"kind":"ping","t":1,"ls":"x"}', "bad_envelope" },
      { '{"kind":"ping","t":1,"ls":1.5}', "bad_envelope" },
      { string.rep("[", 5000), "bad_json" },
    }
    for _, c in ipairs(cases) do
      local env, why, detail = envelope.decode(c[1])
      assert.is_nil(env, c[1])
      assert.are.equal(c[2], why, c[1])
      assert.is_string(detail)
    end
    local _, _, detail = envelope.decode(comm.json.encode{ kind = "req", src = "a", dst = "b", type = "t",
                                                           hops = 0, ttl = 1, inc = 1 })
    assert.are.equal("req without id", detail)
  end)

  it("checks every field of every kind it knows", function()
    for kind, spec in pairs(envelope.KINDS) do
      for field, what in pairs(spec) do
        if what:sub(1, 1) ~= "?" then
          local good = {}
          for f, w in pairs(spec) do
            local t = w:gsub("^%?", "")
            good[f] = ({ string = "s", name = "n", addr = "h:1", time = 1.5, uint = 0, id = 1,
                         links = { { node = "x", inc = 1 } } })[t]
          end
          good.kind = kind
          assert.is_table(envelope.check(good), kind)
          good[field] = nil
          local env, why = envelope.check(good)
          assert.is_nil(env)
          assert.are.equal("bad_envelope", why, kind .. "." .. field)
        end
      end
    end
  end)

  it("refuses every number from the wire that is not finite and in range (1e999 and friends)", function()
    local good = {
      hello = '{"kind":"hello","v":2,"node":"a","inc":1}',
      welcome = '{"kind":"welcome","v":2,"node":"a","inc":1}',
      ping = '{"kind":"ping","t":1}', pong = '{"kind":"pong","t":1}',
      links = '{"kind":"links","origin":"a","epoch":1,"seq":1,"links":[{"node":"b","inc":1}]}',
      msg = '{"kind":"msg","src":"a","dst":"b","type":"t","hops":0}',
      req = '{"kind":"req","src":"a","dst":"b","type":"t","hops":0,"id":1,"ttl":1,"inc":1}',
      rep = '{"kind":"rep","src":"a","dst":"b","hops":0,"id":1}',
    }
    local fields = { hello = { "v", "inc" }, welcome = { "v", "inc" }, ping = { "t" }, pong = { "t" },
                     links = { "epoch", "seq", "inc" }, msg = { "hops" }, req = { "hops", "id", "ttl", "inc" },
                     rep = { "hops", "id" } }
    local n = 0
    for kind, text in pairs(good) do
      assert.is_table(envelope.decode(text), text)
      for _, f in ipairs(fields[kind]) do
        for _, bad in ipairs{ "1e999", "-1e999", "NaN", "1e15", "-1" } do
          if not (bad == "-1" and (f == "t" or f == "ttl")) then
            local poisoned = text:gsub('"' .. f .. '":[^,}]+', '"' .. f .. '":' .. bad, 1)
            assert.are_not.equal(text, poisoned)
            local env, why = envelope.decode(poisoned)
            assert.is_nil(env, poisoned)
            assert.are.equal("bad_envelope", why, poisoned)
            n = n + 1
          end
        end
      end
    end
    assert.is_true(n >= 60)
    -- names and lists are bounded too
    local long = string.rep("n", envelope.MAX_NAME + 1)
    assert.is_nil(envelope.decode('{"kind":"hello","v":2,"node":"' .. long .. '","inc":1}'))
    assert.is_table(envelope.decode('{"kind":"hello","v":2,"node":"' .. long:sub(2) .. '","inc":1}'))
    local many = {}
    for i = 1, envelope.MAX_LINKS + 1 do many[i] = { node = "n" .. i, inc = 1 } end
    assert.is_nil(envelope.decode(comm.json.encode{ kind = "links", origin = "a", epoch = 1, seq = 1, links = many }))
  end)

  it("writes an empty link list as a JSON array", function()
    local f = envelope.encode_links("a", 1, 2, {})
    assert.truthy(f:find('"links":[]', 1, true))
    assert.are.same({}, envelope.links(assert(envelope.decode(f)).links))
    local list = { { node = "b", inc = 5 }, { node = "c", inc = 6 } }
    local g = assert(envelope.decode(envelope.encode_links("a", 1, 2, list)))
    assert.are.same(list, envelope.links(g.links))
  end)

  it("sends a body after the header, and lets it pass undecoded", function()
    local f = envelope.encode{ kind = "msg", src = "a", dst = "b", type = "t", hops = 0, body = { n = 1 } }
    local head, body = f:match("^([^\n]*)\n(.*)$")
    assert.are.same({ n = 1 }, comm.json.decode(body))
    assert.is_nil(comm.json.decode(head).body)
    local env = assert(envelope.decode(f))
    assert.is_nil(env.body)
    -- a relay re-encodes the header and passes the body text on as it came
    env.hops = 1
    local g = envelope.encode(env)
    assert.are.equal(body, g:match("\n(.*)$"))
    assert.are.equal(1, comm.json.decode(g:match("^[^\n]*")).hops)
    assert.are.same({ n = 1 }, envelope.body(assert(envelope.decode(g))))
    -- straight to its destination, the body goes inside: one JSON text
    local whole = envelope.encode(env, true)
    assert.are.same({ n = 1 }, comm.json.decode(whole).body)
    assert.are.same({ n = 1 }, envelope.body(assert(envelope.decode(whole))))
    -- no body: no line feed; a body inside the header is fine too
    assert.is_nil(envelope.encode{ kind = "msg", src = "a", dst = "b", type = "t", hops = 0 }:find("\n"))
    local inline = assert(envelope.decode('{"kind":"msg","src":"a","dst":"b","type":"t","hops":0,"body":[1]}'))
    assert.are.same({ 1 }, envelope.body(inline))
    -- a bad body is found only where it is decoded; two bodies are refused
    local bad = assert(envelope.decode('{"kind":"msg","src":"a","dst":"b","type":"t","hops":0}\n{oops'))
    local v, err = envelope.body(bad)
    assert.is_nil(v)
    assert.is_string(err)
    assert.are.same({ nil, "bad_envelope", "msg with two bodies" }, { envelope.decode(
      '{"kind":"msg","src":"a","dst":"b","type":"t","hops":0,"body":1}\n2') })
  end)

  it("writes requests and replies without the JSON encoder, as the JSON decoder reads them", function()
    local odd = { "a", 'q"uote', "back\\slash", "tab\tnl\n", "é/ü", string.rep("n", 255) }
    for _, name in ipairs(odd) do
      for _, ttl in ipairs{ 5, 0.25, 1e-3, 123456.789 } do
        local f = envelope.encode_req(name, "b", name, 7.0, 1700000000000, 0, ttl, { k = name })
        local head = f:match("^[^\n]*")
        assert.are.same({ kind = "req", src = name, dst = "b", type = name, id = 7, inc = 1700000000000, hops = 0,
                          ttl = ttl }, comm.json.decode(head))
        local env = assert(envelope.decode(f))
        assert.are.same({ k = name }, envelope.body(env))
      end
      local r = envelope.encode_rep("b", name, 9, 1700000000000.0, name, comm.json.null)
      assert.are.same({ kind = "rep", src = "b", dst = name, type = name, id = 9, inc = 1700000000000, hops = 0 },
                      comm.json.decode(r:match("^[^\n]*")))
      assert.are.equal(comm.json.null, envelope.body(assert(envelope.decode(r))))
    end
    -- no body: no line feed; an error, or no inc/type: the general encoder
    assert.is_nil(envelope.encode_req("a", "b", "t", 1, 2, 0, 5):find("\n"))
    local e = assert(envelope.decode(envelope.encode_rep("b", "a", 1, nil, nil, nil, "remote error: x")))
    assert.are.same({ "rep", "remote error: x", nil, nil }, { e.kind, e.err, e.inc, e.type })
    -- a body JSON cannot hold raises at the caller, as encode does
    assert.has_error(function() envelope.encode_req("a", "b", "t", 1, 2, 0, 5, { f = print }) end)
  end)

  it("accepts a field exactly when it has the right type and range, whatever the value", function()
    local valid = {
      string = function(v) return type(v) == "string" end,
      name = function(v) return type(v) == "string" and v ~= "" and #v <= envelope.MAX_NAME end,
      addr = function(v) return type(v) == "string" and #v <= envelope.MAX_ADDR end,
      time = function(v) return type(v) == "number" and v >= -envelope.MAX_TIME and v <= envelope.MAX_TIME end,
      uint = function(v) return type(v) == "number" and v >= 0 and v < envelope.MAX_INT and v % 1 == 0 end,
      id = function(v) return type(v) == "number" and v >= 1 and v < envelope.MAX_INT and v % 1 == 0 end,
      links = function(v) return type(v) == "table" and #v == 0 and next(v) == nil end,
    }
    local good = { string = "s", name = "n", addr = "h:1", time = 1.5, uint = 0, id = 1, links = {} }
    local values = { true, false, {}, { 1 }, comm.json.null, "", "x", "5", string.rep("n", 256),
                     string.rep("a", 1025), 0, 1, -1, 1.5, 1e14, 1e14 - 1, 1e9, -1e9 - 1, 1 / 0, -1 / 0, 0 / 0 }
    for kind, spec in pairs(envelope.KINDS) do
      local env = { kind = kind }
      for field, what in pairs(spec) do env[field] = good[what:gsub("^%?", "")] end
      assert(envelope.check(env), kind)
      for field, what in pairs(spec) do
        local optional = what:sub(1, 1) == "?"
        what = what:gsub("^%?", "")
        for _, v in ipairs(values) do
          local e = {}
          for k, x in pairs(env) do e[k] = x end
          e[field] = v
          local want = valid[what](v)
          local got, why = envelope.check(e)
          assert(want == (got ~= nil), ("%s.%s = %s: %s"):format(kind, field, tostring(v), tostring(why)))
        end
        local e = {}
        for k, x in pairs(env) do e[k] = x end
        e[field] = nil
        assert(optional == (envelope.check(e) ~= nil), kind .. " without " .. field)
      end
    end
  end)
end)
