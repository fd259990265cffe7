-- luacomm.sim.json: a JSON encoder whose output does not depend on table
-- iteration order (object keys sorted), for simulated nodes. lua-cjson
-- writes keys in hash order, which changes from one process to the next;
-- here the scalars still go through lua-cjson, so numbers and strings are
-- written exactly as the real module writes them, and the text decodes to
-- the same value.
local cjson = require "cjson"

local type, tostring, error, sort, concat = type, tostring, error, table.sort, table.concat
local mtype, huge, find = math.type, math.huge, string.find

local M = {}

local scalar = cjson.new()
scalar.encode_invalid_numbers(false)
local encode_scalar = scalar.encode
local null = scalar.null

local MAX_DEPTH = 1000

local encode

local function key_text(k)
  local tk = type(k)
  if tk == "string" then return k end
  if tk == "number" then return encode_scalar(k) end
  error("Cannot serialise table: table key must be a number or string", 0)
end

-- An array when every key is a positive integer (as lua-cjson decides,
-- with its default sparseness limit: over 10 and over twice the count).
local function array_size(t)
  local max, n = 0, 0
  for k in next, t do
    if mtype(k) ~= "integer" or k < 1 then
      if type(k) == "number" and k >= 1 and k < huge and k == k // 1 then
        k = k // 1
      else
        return nil
      end
    end
    if k > max then max = k end
    n = n + 1
  end
  if max > 10 and max > n * 2 then error("Cannot serialise table: excessively sparse array", 0) end
  return max
end

local function encode_table(t, depth, buf, n)
  if depth > MAX_DEPTH then error(("Cannot serialise, excessive nesting (%d)"):format(depth), 0) end
  local size = array_size(t)
  if size and size > 0 then
    n = n + 1
    buf[n] = "["
    for i = 1, size do
      if i > 1 then n = n + 1; buf[n] = "," end
      n = encode(t[i], depth + 1, buf, n)
    end
    n = n + 1
    buf[n] = "]"
    return n
  end
  if size == 0 then
    n = n + 1
    buf[n] = "{}"
    return n
  end
  local keys, texts, m = {}, {}, 0
  for k in next, t do
    m = m + 1
    local s = key_text(k)
    keys[m], texts[s] = s, k
  end
  sort(keys)
  n = n + 1
  buf[n] = "{"
  for i = 1, m do
    local s = keys[i]
    if i > 1 then n = n + 1; buf[n] = "," end
    n = n + 1
    buf[n] = encode_scalar(s) .. ":"
    n = encode(t[texts[s]], depth + 1, buf, n)
  end
  n = n + 1
  buf[n] = "}"
  return n
end

encode = function(v, depth, buf, n)
  local tv = type(v)
  n = n + 1
  if tv == "string" then
    if find(v, '[%c"\\/\128-\255]') then buf[n] = encode_scalar(v) else buf[n] = '"' .. v .. '"' end
  elseif tv == "number" then
    if mtype(v) == "integer" and v < 1e14 and v > -1e14 then buf[n] = tostring(v) else buf[n] = encode_scalar(v) end
  elseif tv == "boolean" then
    buf[n] = v and "true" or "false"
  elseif v == nil or v == null then
    buf[n] = "null"
  elseif tv == "table" then
    return encode_table(v, depth, buf, n - 1)
  else
    error("Cannot serialise " .. tv .. ": type not supported", 0)
  end
  return n
end

-- M.encode(v) -> JSON text; raises (with lua-cjson's words) on a value
-- JSON cannot hold.
function M.encode(v)
  local buf = {}
  local n = encode(v, 1, buf, 0)
  if n == 1 then return buf[1] end
  return concat(buf, "", 1, n)
end

return M
