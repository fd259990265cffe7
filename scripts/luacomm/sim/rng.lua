-- luacomm.sim.rng: the one seeded generator of a simulation.
--
-- xoshiro256** seeded through splitmix64, in Lua 5.4's 64-bit integers
-- (whose arithmetic wraps and whose >> is a logical shift), so the same
-- seed gives the same numbers on every machine and in every process.
local M = {}

local function splitmix(s)
  s = s + 0x9e3779b97f4a7c15
  local z = s
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return s, z ~ (z >> 31)
end

local function rotl(x, k) return (x << k) | (x >> (64 - k)) end

-- M.new(seed) -> a function returning floats in [0, 1), and with
-- (m) / (m, n) integers as math.random does.
function M.new(seed)
  local s0, s1, s2, s3
  local st = math.tointeger(seed) or error("rng: integer seed expected", 2)
  st, s0 = splitmix(st)
  st, s1 = splitmix(st)
  st, s2 = splitmix(st)
  s3 = select(2, splitmix(st))
  local function next64()
    local r = rotl(s1 * 5, 7) * 9
    local t = s1 << 17
    s2 = s2 ~ s0
    s3 = s3 ~ s1
    s1 = s1 ~ s2
    s0 = s0 ~ s3
    s2 = s2 ~ t
    s3 = rotl(s3, 45)
    return r
  end
  return function(m, n)
    local f = (next64() >> 11) * 0x1p-53
    if m == nil then return f end
    if n == nil then m, n = 1, m end
    m, n = math.tointeger(m), math.tointeger(n)
    if not m or not n or m > n then error("bad argument to 'random' (interval is empty)", 2) end
    return m + math.floor(f * (n - m + 1))
  end
end

return M
