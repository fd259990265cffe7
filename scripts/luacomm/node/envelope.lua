-- luacomm.node.envelope: the JSON envelopes of the node protocol (one per
-- frame; docs/PROTOCOL.md is the reference), checked on the way in so
-- that nothing malformed gets past the reader.
local json = require("luacomm").json

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local floor = math.floor
local encode, decode = json.encode, json.decode

local M = {}
M._VERSION = "0.1.0"
M.VERSION = 1 -- the protocol version this implementation speaks

-- Field checks by name, as Lua expressions on `v` (compiled below); a
-- leading "?" in a spec makes the field optional.
local checks = {
  string = 'type(v) == "string"',
  name = 'type(v) == "string" and v ~= ""',
  number = 'type(v) == "number" and v == v',
  integer = 'type(v) == "number" and floor(v) == v',
  count = 'type(v) == "number" and v >= 0 and floor(v) == v',
  id = 'type(v) == "number" and v >= 1 and floor(v) == v',
  links = 'links(v)',
}

-- A list of { node = name, inc = number } (an empty JSON object passes for
-- an empty list).
local function links(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  for i = 1, n do
    local l = v[i]
    if type(l) ~= "table" or type(l.node) ~= "string" or l.node == "" or type(l.inc) ~= "number" then
      return false
    end
  end
  return true
end

-- The kinds and the fields each must carry. Unknown fields are ignored
-- (a later version may add some); `body` is any JSON value, or absent.
M.KINDS = {
  hello = { v = "integer", node = "name", inc = "number", listen = "?string" },
  welcome = { v = "integer", node = "name", inc = "number", listen = "?string" },
  reject = { reason = "string", node = "?string" },
  bye = { reason = "?string" },
  ping = { t = "number" },
  pong = { t = "number" },
  links = { origin = "name", epoch = "number", seq = "number", links = "links" },
  msg = { src = "name", dst = "name", type = "string", hops = "count" },
  req = { src = "name", dst = "name", type = "string", hops = "count", id = "id",
          ttl = "number", inc = "number" },
  rep = { src = "name", dst = "name", hops = "count", id = "id", inc = "?number", err = "?string", type = "?string",
          by = "?string" },
}

-- Each kind's spec is compiled once into a checking function, so that the
-- per-message check is straight-line code: fn(env) -> nil when fine, else
-- the detail of what is wrong.
local function compile(kind, spec)
  local lines = { "local type, floor, links = ...", "return function(env)", "local v" }
  local fields = {}
  for field in pairs(spec) do fields[#fields + 1] = field end
  table.sort(fields)
  for _, field in ipairs(fields) do
    local what = spec[field]
    local optional = what:sub(1, 1) == "?"
    if optional then what = what:sub(2) end
    assert(checks[what], what)
    lines[#lines + 1] = ("v = env[%q]"):format(field)
    lines[#lines + 1] = ("if v == nil then %s elseif not (%s) then return %q end")
      :format(optional and "" or ("return %q"):format(kind .. " without " .. field), checks[what],
              kind .. " with a bad " .. field)
  end
  lines[#lines + 1] = "end"
  return assert(load(table.concat(lines, "\n"), "=envelope:" .. kind))(type, floor, links)
end

local compiled = {}
for kind, spec in pairs(M.KINDS) do compiled[kind] = compile(kind, spec) end

-- Checks a decoded value: env, or nil, reason ("bad_envelope" or
-- "unknown_kind"), detail.
function M.check(env)
  if type(env) ~= "table" then return nil, "bad_envelope", "not a JSON object" end
  local kind = env.kind
  if type(kind) ~= "string" then return nil, "bad_envelope", "no kind" end
  local check = compiled[kind]
  if check == nil then return nil, "unknown_kind", kind end
  local wrong = check(env)
  if wrong then return nil, "bad_envelope", wrong end
  return env
end

-- A frame -> env, or nil, reason ("bad_json", "bad_envelope",
-- "unknown_kind"), detail. Never raises.
function M.decode(frame)
  local env, err = decode(frame)
  if env == nil then return nil, "bad_json", tostring(err) end
  return M.check(env)
end

-- An envelope -> frame. Raises on a value JSON cannot hold (the caller's
-- body, usually).
M.encode = encode

-- A links announcement. lua-cjson writes an empty table as {}, so the
-- empty list is spelled out: the protocol says `links` is an array.
function M.encode_links(origin, epoch, seq, list)
  if #list > 0 then
    return encode{ kind = "links", origin = origin, epoch = epoch, seq = seq, links = list }
  end
  local s = encode{ kind = "links", origin = origin, epoch = epoch, seq = seq }
  return s:sub(1, -2) .. ',"links":[]}'
end

-- An envelope whose body is already JSON text (broadcast encodes the body
-- once for every destination): fields + "body": body_json.
function M.encode_with_body(env, body_json)
  local s = encode(env)
  if body_json == nil then return s end
  return s:sub(1, -2) .. ',"body":' .. body_json .. '}'
end

-- A checked `links` field as a list (an empty JSON object from another
-- lua-cjson peer is an empty list too).
function M.links(v)
  local list = {}
  for i, l in ipairs(v) do list[i] = { node = l.node, inc = l.inc } end
  return list
end

return M
