-- luacomm.node.routes: the routing table of a node, built link-state style.
--
-- Every node announces the names it has a live link to, stamped with its
-- incarnation (epoch) and a sequence number; the table keeps the newest
-- announcement per origin. Routes are shortest paths (fewest hops) from
-- this node, found by a breadth-first search over links that BOTH ends
-- announce (the node's own links count as confirmed): an announcement left
-- over from a dead node cannot make it reachable, since its neighbours
-- have withdrawn their side.
--
-- The search runs only when the topology changed, on the next lookup;
-- per-message lookups are one table read.
local setmetatable, ipairs, pairs = setmetatable, ipairs, pairs
local sort = table.sort

local M = {}
M._VERSION = "0.1.0"

local Routes = {}
Routes.__index = Routes

function M.new(self_name)
  return setmetatable({
    name = self_name,
    own = {},       -- name -> true: this node's live links
    db = {},        -- origin -> { epoch, seq, links = {names}, set = {name -> true} }
    dirty = true,
    hop = {},       -- destination -> first hop (a neighbour's name)
    dist = {},      -- destination -> hops
    order = {},     -- reachable names, nearest first
  }, Routes)
end

-- Marks a link of this node up or down; true when that changed anything.
function Routes:set_local(name, up)
  up = up or nil
  if self.own[name] == up then return false end
  self.own[name] = up
  self.dirty = true
  return true
end

-- This node's links, sorted (announcements are then stable and diffable).
function Routes:local_links()
  local list = {}
  for name in pairs(self.own) do list[#list + 1] = name end
  sort(list)
  return list
end

local function newer(old, epoch, seq)
  if old == nil then return true end
  if epoch ~= old.epoch then return epoch > old.epoch end
  return seq > old.seq
end

-- Applies an announcement; true if it was newer than what the table had
-- (the caller then floods it on), false for a stale or own one.
function Routes:update(origin, epoch, seq, links)
  if origin == self.name or not newer(self.db[origin], epoch, seq) then return false end
  local set = {}
  for _, v in ipairs(links) do set[v] = true end
  self.db[origin] = { epoch = epoch, seq = seq, links = links, set = set }
  self.dirty = true
  return true
end

-- The stored announcement of origin: epoch, seq, links.
function Routes:entry(origin)
  local e = self.db[origin]
  if e then return e.epoch, e.seq, e.links end
end

-- Every stored announcement, for syncing a newly linked neighbour.
function Routes:entries()
  local list = {}
  for origin, e in pairs(self.db) do
    list[#list + 1] = { origin = origin, epoch = e.epoch, seq = e.seq, links = e.links }
  end
  return list
end

-- True if u announces v and v announces u (this node's own links stand
-- for its side).
function Routes:_confirmed(u, v)
  if v == self.name then return self.own[u] == true end
  local ev = self.db[v]
  return ev ~= nil and ev.set[u] == true
end

function Routes:_recompute()
  local hop, dist, order = {}, {}, {}
  local queue, head = {}, 1
  for _, n in ipairs(self:local_links()) do
    hop[n], dist[n] = n, 1
    order[#order + 1] = n
    queue[#queue + 1] = n
  end
  while head <= #queue do
    local u = queue[head]
    head = head + 1
    local eu = self.db[u]
    if eu then
      for _, v in ipairs(eu.links) do
        if v ~= self.name and dist[v] == nil and self:_confirmed(u, v) then
          hop[v], dist[v] = hop[u], dist[u] + 1
          order[#order + 1] = v
          queue[#queue + 1] = v
        end
      end
    end
  end
  self.hop, self.dist, self.order, self.dirty = hop, dist, order, false
end

-- The neighbour to send to for dst, and the path's length in hops; nil
-- when no route is known.
function Routes:next_hop(dst)
  if self.dirty then self:_recompute() end
  local h = self.hop[dst]
  if h then return h, self.dist[dst] end
end

-- Every node reachable from here (not this one), nearest first. The list
-- is shared: do not modify it.
function Routes:reachable()
  if self.dirty then self:_recompute() end
  return self.order
end

-- Forgets an origin (a node known to be gone for good).
function Routes:forget(origin)
  if self.db[origin] then
    self.db[origin] = nil
    self.dirty = true
  end
end

return M
