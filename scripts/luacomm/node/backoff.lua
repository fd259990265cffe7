-- luacomm.node.backoff: exponential backoff with jitter, for redialling
-- peers and spacing request retries.
--
-- The n-th delay (n from 0) is drawn from [base/2, base] where
-- base = min(max, min * factor^n), then raised to `min` if the halving went
-- under it: every delay stays within [min, max], consecutive failures back
-- off exponentially, and the jitter keeps a crowd of nodes that lost the
-- same peer from redialling it in lockstep. `random` is injectable so a
-- simulation can make the sequence reproducible.
local math_min, math_max, random = math.min, math.max, math.random

local M = {}
M._VERSION = "0.1.0"

local Backoff = {}
Backoff.__index = Backoff

-- opts: min (s, > 0), max (s, >= min), factor (default 2), random (a
-- function returning [0, 1), default math.random).
function M.new(opts)
  opts = opts or {}
  local lo, hi = opts.min or 0.05, opts.max or 5
  if type(lo) ~= "number" or lo <= 0 then error("backoff: min must be a positive number", 2) end
  if type(hi) ~= "number" or hi < lo then error("backoff: max must be a number >= min", 2) end
  local factor = opts.factor or 2
  if type(factor) ~= "number" or factor < 1 then error("backoff: factor must be >= 1", 2) end
  return setmetatable({ min = lo, max = hi, factor = factor, random = opts.random or random,
                        attempt = 0 }, Backoff)
end

-- The delay before the next attempt; each call backs off further.
function Backoff:next()
  -- Stop growing once at max: factor^attempt would overflow to inf otherwise.
  local base = math_min(self.max, self.min * self.factor ^ self.attempt)
  if base < self.max then self.attempt = self.attempt + 1 end
  local d = base * (0.5 + 0.5 * self.random())
  return math_max(self.min, math_min(self.max, d))
end

-- After a success: the next delay is short again.
function Backoff:reset()
  self.attempt = 0
end

return M
