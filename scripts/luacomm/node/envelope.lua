-- luacomm.node.envelope: the JSON envelopes of the node protocol (one per
-- frame; docs/PROTOCOL.md is the reference), checked on the way in so
-- that nothing malformed gets past the reader.
local json = require("luacomm").json

local type, pairs, ipairs, tostring, pcall, error = type, pairs, ipairs, tostring, pcall, error
local floor = math.floor
local find, sub, format = string.find, string.sub, string.format
local encode = json.encode
-- Decoded with a lua-cjson instance of its own (the defaults, as
-- comm.json's decoder), called under pcall right here: comm.json.decode's
-- wrapper costs a call and a type() per frame and body.
local cjson_decode = require("cjson").new().decode

local M = {}
M._VERSION = "0.2.0"
M.VERSION = 2 -- the protocol version this implementation speaks

-- The key under which a decoded envelope keeps its body as JSON text, not
-- yet decoded (no JSON key can be a table). Relays pass it on as it came;
-- only the destination decodes it (M.body).
local RAW = setmetatable({}, { __name = "envelope.RAW" })
M.RAW = RAW

-- Limits on what a peer may send, whatever its authentication. Every
-- number from the wire is finite and in range here, in one place, so that
-- nothing downstream (JSON encoding, comparisons, sums) meets an infinity
-- or a NaN: integers (ids, incarnations, epochs, seqs, hops, versions)
-- are whole and 0 <= n < 1e14 (JSON as lua-cjson writes it keeps them
-- exact below that); times (ttl, ping t) finite, within +-1e9 s.
M.MAX_INT = 1e14
M.MAX_TIME = 1e9
M.MAX_NAME = 255   -- bytes in a node name
M.MAX_LINKS = 1024 -- entries in one links announcement
M.MAX_ADDR = 1024  -- bytes in a listen address

-- Field checks by name, as Lua expressions on `v` (compiled below); a
-- leading "?" in a spec makes the field optional.
local checks = {
  string = 'type(v) == "string"',
  name = 'type(v) == "string" and v ~= "" and #v <= MAX_NAME',
  addr = 'type(v) == "string" and #v <= MAX_ADDR',
  time = 'type(v) == "number" and v >= -MAX_TIME and v <= MAX_TIME',
  -- `v % 1 == 0`, not floor(v) == v: no function call (in range, the same)
  uint = 'type(v) == "number" and v >= 0 and v < MAX_INT and v % 1 == 0',
  id = 'type(v) == "number" and v >= 1 and v < MAX_INT and v % 1 == 0',
  links = 'links(v)',
}

-- A list of at most MAX_LINKS { node = name, inc = uint } (an empty JSON
-- object passes for an empty list).
local function links(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do
    n = n + 1
    if n > M.MAX_LINKS then return false end
  end
  for i = 1, n do
    local l = v[i]
    if type(l) ~= "table" then return false end
    local node, inc = l.node, l.inc
    if type(node) ~= "string" or node == "" or #node > M.MAX_NAME or type(inc) ~= "number"
      or not (inc >= 0 and inc < M.MAX_INT and floor(inc) == inc) then
      return false
    end
  end
  return true
end

-- The kinds and the fields each must carry. Unknown fields are ignored
-- (a later version may add some); `body` is any JSON value, or absent.
M.KINDS = {
  hello = { v = "uint", node = "name", inc = "uint", listen = "?addr", nonce = "?string" },
  challenge = { node = "name", nonce = "string" },
  auth = { mac = "string" },
  welcome = { v = "uint", node = "name", inc = "uint", listen = "?addr", mac = "?string" },
  reject = { reason = "string", node = "?string" },
  bye = { reason = "?string" },
  ping = { t = "time", ls = "?uint" },
  pong = { t = "time" },
  links = { origin = "name", epoch = "uint", seq = "uint", links = "links" },
  msg = { src = "name", dst = "name", type = "string", hops = "uint" },
  req = { src = "name", dst = "name", type = "string", hops = "uint", id = "id",
          ttl = "time", inc = "uint" },
  rep = { src = "name", dst = "name", hops = "uint", id = "id", inc = "?uint", err = "?string", type = "?string",
          by = "?name" },
}

-- The same checks without type(): a comparison with a number or a string
-- raises on any other type (no metatables on decoded JSON), so under pcall
-- these accept exactly what those accept, for one call per envelope
-- instead of one a field. When one fails, the checks above name why.
local quick = {
  string = 'v >= ""',
  name = 'v > "" and #v <= MAX_NAME',
  addr = 'v >= "" and #v <= MAX_ADDR',
  time = 'v >= -MAX_TIME and v <= MAX_TIME',
  uint = 'v >= 0 and v < MAX_INT and v % 1 == 0',
  id = 'v >= 1 and v < MAX_INT and v % 1 == 0',
  links = 'links(v)',
}

-- Each kind's spec is compiled once into checking functions, so that the
-- per-message check is straight-line code: fn(env) -> nil when fine, else
-- the detail of what is wrong; and quick(env) -> true when fine, else false
-- or an error.
local function compile(kind, spec)
  local lines = { "local type, floor, links, MAX_NAME, MAX_ADDR, MAX_TIME, MAX_INT = ...",
                  "local function check(env)", "local v" }
  local fast = { "local function quick(env)", "local v" }
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
    fast[#fast + 1] = ("v = env[%q]"):format(field)
    fast[#fast + 1] = ("if %s not (%s) then return false end")
      :format(optional and "v ~= nil and" or "v == nil or", quick[what])
  end
  lines[#lines + 1] = "end"
  fast[#fast + 1] = "return true end"
  lines[#lines + 1] = table.concat(fast, "\n")
  lines[#lines + 1] = "return check, quick"
  return assert(load(table.concat(lines, "\n"), "=envelope:" .. kind))(type, floor, links, M.MAX_NAME,
                                                                       M.MAX_ADDR, M.MAX_TIME, M.MAX_INT)
end

local compiled, quickly = {}, {}
for kind, spec in pairs(M.KINDS) do compiled[kind], quickly[kind] = compile(kind, spec) end

-- Checks a decoded value: env, or nil, reason ("bad_envelope" or
-- "unknown_kind"), detail.
function M.check(env)
  if type(env) ~= "table" then return nil, "bad_envelope", "not a JSON object" end
  local quick_check = quickly[env.kind]
  if quick_check then
    local ok, fine = pcall(quick_check, env)
    if ok and fine then return env end
  end
  local kind = env.kind
  if type(kind) ~= "string" then return nil, "bad_envelope", "no kind" end
  local check = compiled[kind]
  if check == nil then return nil, "unknown_kind", kind end
  local wrong = check(env)
  if wrong then return nil, "bad_envelope", wrong end
  return env
end

-- A frame -> env, or nil, reason ("bad_json", "bad_envelope",
-- "unknown_kind"), detail. Never raises. A frame is the header (compact
-- JSON, no line feed in it), then, if there is a body, a line feed and the
-- body's JSON text, kept undecoded in env[RAW]; a body inside the header
-- is accepted too.
function M.decode(frame)
  if type(frame) ~= "string" then return nil, "bad_json", "not a string" end
  local lf = find(frame, "\n", 1, true)
  local head, raw = frame, nil
  if lf then head, raw = sub(frame, 1, lf - 1), sub(frame, lf + 1) end
  local ok, env = pcall(cjson_decode, head)
  if not ok then return nil, "bad_json", (tostring(env):gsub("^.-:%d+: ", "")) end
  local why, detail
  env, why, detail = M.check(env)
  if env and raw then
    if env.body ~= nil then return nil, "bad_envelope", env.kind .. " with two bodies" end
    env[RAW] = raw
  end
  return env, why, detail
end

-- The body of a decoded envelope: value (nil when absent), or nil, err
-- when its JSON text is bad. Decoded once.
function M.body(env)
  local raw = env[RAW]
  if raw == nil then return env.body end
  local ok, v = pcall(cjson_decode, raw)
  if not ok then return nil, (tostring(v):gsub("^.-:%d+: ", "")) end
  env.body, env[RAW] = v, nil
  return v
end

-- An envelope -> frame. With `inline` (the frame goes straight to its
-- destination: nobody relays it) the body is written inside the header,
-- one JSON text; else after the header and a line feed, so that relays
-- need not touch it. The body is env.body, or env[RAW] as it arrived.
-- Raises on a value JSON cannot hold (the caller's body, usually).
function M.encode(env, inline)
  local body, raw = env.body, env[RAW]
  if raw == nil and (inline or body == nil) then return encode(env) end
  env.body, env[RAW] = nil, nil
  local ok, head = pcall(encode, env)
  env.body, env[RAW] = body, raw
  if not ok then error(head, 2) end
  raw = raw or encode(body)
  if inline then return sub(head, 1, -2) .. ',"body":' .. raw .. "}" end
  return head .. "\n" .. raw
end

-- The headers of requests and replies, the envelopes every request
-- makes, are written by concatenation rather than the JSON encoder: the
-- same JSON, without lua-cjson's table walk and its printf of every number
-- with 14 significant digits, nor string.format's per-argument work. Names
-- and types are quoted by the encoder once and remembered.
local quoted, nquoted = {}, 0
local function quote(s)
  local q = quoted[s]
  if q then return q end
  q = encode(s)
  if nquoted >= 4096 then quoted, nquoted = {}, 0 end -- types come from the application: bounded
  quoted[s], nquoted = q, nquoted + 1
  return q
end

-- A number as JSON: an integral value as an integer (`| 0`: decoded JSON
-- numbers are floats), others as lua-cjson writes them. Remembered like
-- names: incarnations and ttls repeat, and turning a number into a string
-- is an snprintf.
local numbers, nnumbers = {}, 0
local function number(x)
  local s = numbers[x]
  if s then return s end
  if x % 1 == 0 and x > -2 ^ 53 and x < 2 ^ 53 then s = tostring(x | 0) else s = format("%.14g", x) end
  if nnumbers >= 4096 then numbers, nnumbers = {}, 0 end
  numbers[x], nnumbers = s, nnumbers + 1
  return s
end

-- The frame of a req (body after a line feed, encoded here: raises on a
-- value JSON cannot hold).
function M.encode_req(src, dst, mtype_, id, inc, hops, ttl, body)
  local head = '{"kind":"req","src":' .. quote(src) .. ',"dst":' .. quote(dst) .. ',"type":' .. quote(mtype_)
    .. ',"id":' .. (id | 0) .. ',"inc":' .. number(inc) .. ',"hops":' .. (hops == 0 and "0" or number(hops))
    .. ',"ttl":' .. number(ttl) .. "}"
  if body == nil then return head end
  return head .. "\n" .. encode(body)
end

-- The frame of a rep from its destination (no `by`): body after a line
-- feed, or err; inc and type as the request had them (both optional).
function M.encode_rep(src, dst, id, inc, mtype_, body, err)
  local head
  if inc ~= nil and mtype_ ~= nil and err == nil then
    head = '{"kind":"rep","src":' .. quote(src) .. ',"dst":' .. quote(dst) .. ',"type":' .. quote(mtype_)
      .. ',"id":' .. (id | 0) .. ',"inc":' .. number(inc) .. ',"hops":0}'
  else
    head = encode{ kind = "rep", src = src, dst = dst, id = id, inc = inc, type = mtype_, hops = 0, err = err }
  end
  if body == nil then return head end
  return head .. "\n" .. encode(body)
end

-- A links announcement. lua-cjson writes an empty table as {}, so the
-- empty list is spelled out: the protocol says `links` is an array.
function M.encode_links(origin, epoch, seq, list)
  if #list > 0 then
    return encode{ kind = "links", origin = origin, epoch = epoch, seq = seq, links = list }
  end
  local s = encode{ kind = "links", origin = origin, epoch = epoch, seq = seq }
  return s:sub(1, -2) .. ',"links":[]}'
end

-- A checked `links` field as a list (an empty JSON object from another
-- lua-cjson peer is an empty list too).
function M.links(v)
  local list = {}
  for i, l in ipairs(v) do list[i] = { node = l.node, inc = l.inc } end
  return list
end

return M
