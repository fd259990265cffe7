-- luacomm.sim.json: a JSON encoder whose output does not depend on table
-- iteration order (object keys sorted), for simulated nodes. lua-cjson
-- writes keys in hash order, which changes from one process to the next;
-- here the scalars still go through lua-cjson, so numbers and strings are
-- written exactly as the real module writes them, and the text decodes to
-- the same value.
local cjson = require "cjson"

local type, tostring, error, sort, concat, ipairs, next = type, tostring, error, table.sort, table.concat, ipairs, next
local mtype, find = math.type, string.find

local M = {}

local scalar = cjson.new()
scalar.encode_invalid_numbers(false)
local encode_scalar = scalar.encode
local null = scalar.null

local MAX_DEPTH = 1000

local SPECIAL = '[%c"\\/\128-\255]'

local encode_value

local function quote(s)
  if find(s, SPECIAL) then return encode_scalar(s) end
  return '"' .. s .. '"'
end

-- Objects whose keys are all strings are encoded by a function made for
-- their key set ("shape"), found by the keys in iteration order: a
-- node's envelopes come in a few dozen shapes, and a straight-line
-- function per shape writes one in a single concatenation, without
-- sorting. Up to MAX_SHAPES shapes of at most 40 keys; others take the
-- general path.
local MAX_SHAPES, MAX_SHAPE_KEYS = 4096, 40 -- trie nodes, keys
local shapes, nshapes = {}, 0

local QSTR = {} -- quoted short strings seen so far (node names, message types, kinds)

local function compile_shape(sorted)
  local src = { "local enc, Q = ...", "return function(t, depth)" }
  local expr = {}
  for i, k in ipairs(sorted) do
    src[#src + 1] = ("local v%d = t[%q]"):format(i, k)
    src[#src + 1] = ("v%d = Q[v%d] or enc(v%d, depth)"):format(i, i, i)
    expr[i] = ("%q .. v%d"):format((i > 1 and "," or "{") .. quote(k) .. ":", i)
  end
  src[#src + 1] = "return " .. concat(expr, " .. ") .. ' .. "}"'
  src[#src + 1] = "end"
  return assert(load(concat(src, "\n"), "=json shape", "t", {}))(encode_value, QSTR)
end

local function encode_object(t, depth, keys, m, texts)
  sort(keys)
  local parts = {}
  for i = 1, m do
    local s = keys[i]
    local k = texts and texts[s] or s
    parts[i] = quote(s) .. ":" .. encode_value(t[k], depth)
  end
  return "{" .. concat(parts, ",") .. "}"
end

-- An array when every key is a positive integer (as lua-cjson decides,
-- with its default sparseness limit: over 10 and over twice the count);
-- else an object, keys written in sorted order.
local function encode_table(t, depth)
  if depth > MAX_DEPTH then error(("Cannot serialise, excessive nesting (%d)"):format(depth), 0) end
  depth = depth + 1
  local keys, m = {}, 0
  if type(next(t)) == "string" then
    -- the common case, an object with string keys: its shape's encoder,
    -- found in a trie of keys in iteration order
    local node = shapes
    for k in next, t do
      if type(k) ~= "string" then goto general end
      m = m + 1
      keys[m] = k
      if node then
        local nx = node[k]
        if nx == nil and nshapes < MAX_SHAPES and m <= MAX_SHAPE_KEYS then
          nx = {}
          node[k] = nx
          nshapes = nshapes + 1
        end
        node = nx
      end
    end
    if node then
      local f = node[1] -- an integer key: never one of the strings
      if f == nil then
        local sorted = {}
        for i = 1, m do sorted[i] = keys[i] end
        sort(sorted)
        f = compile_shape(sorted)
        node[1] = f
      end
      return f(t, depth)
    end
    return encode_object(t, depth, keys, m, nil)
  end
  ::general::
  keys, m = {}, 0
  local max, kind = 0, nil -- kind: "s" all strings, "i" all positive integers, false mixed
  for k in next, t do
    m = m + 1
    keys[m] = k
    if type(k) == "string" then
      if kind == nil then kind = "s" elseif kind == "i" then kind = false end
    elseif mtype(k) == "integer" and k >= 1 then
      if kind == nil then kind = "i" elseif kind == "s" then kind = false end
      if k > max then max = k end
    else
      kind = false
    end
  end
  if m == 0 then return "{}" end
  if kind == "i" then
    if max > 10 and max > m * 2 then error("Cannot serialise table: excessively sparse array", 0) end
    local parts = {}
    for i = 1, max do parts[i] = encode_value(t[i], depth) end
    return "[" .. concat(parts, ",") .. "]"
  end
  local texts = {}
  for i = 1, m do
    local k = keys[i]
    local tk = type(k)
    local s = k
    if tk == "number" then
      s = encode_scalar(k)
    elseif tk ~= "string" then
      error("Cannot serialise table: table key must be a number or string", 0)
    end
    keys[i], texts[s] = s, k
  end
  return encode_object(t, depth, keys, m, texts)
end

-- How many QSTR holds (at most 4096, each at most 32 bytes).
local nqstr = 0

encode_value = function(v, depth)
  local tv = type(v)
  if tv == "string" then
    local q = QSTR[v]
    if q then return q end
    if find(v, SPECIAL) then q = encode_scalar(v) else q = '"' .. v .. '"' end
    if nqstr < 4096 and #v <= 32 then
      nqstr = nqstr + 1
      QSTR[v] = q
    end
    return q
  elseif tv == "number" then
    if mtype(v) == "integer" and v < 1e14 and v > -1e14 then return tostring(v) end
    return encode_scalar(v)
  elseif tv == "boolean" then
    return v and "true" or "false"
  elseif v == nil or v == null then
    return "null"
  elseif tv == "table" then
    return encode_table(v, depth)
  end
  error("Cannot serialise " .. tv .. ": type not supported", 0)
end

-- M.encode(v) -> JSON text; raises (with lua-cjson's words) on a value
-- JSON cannot hold.
function M.encode(v)
  return encode_value(v, 1)
end

return M
