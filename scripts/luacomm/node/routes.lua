-- luacomm.node.routes: the routing table of a node, built link-state style.
--
-- Every node announces the nodes it has a live link to, each with that
-- node's incarnation, and stamps the announcement with its own incarnation
-- (epoch) and a sequence number; the table keeps the newest announcement
-- per origin. Routes are shortest paths (fewest hops) from this node,
-- found by a breadth-first search over links that BOTH ends announce, each
-- naming the other's current incarnation (this node's own links count as
-- confirmed). So news left over from a dead node, or from a node's
-- previous life, cannot make anything reachable: its neighbours have
-- withdrawn their side, or name a newer incarnation than the stale news.
--
-- The search runs only when the topology changed, on the next lookup;
-- per-message lookups are one table read.
local setmetatable, ipairs, pairs = setmetatable, ipairs, pairs
local sort = table.sort

local M = {}
M._VERSION = "0.2.0"

local Routes = {}
Routes.__index = Routes

-- max: how many origins' announcements it keeps at most (default 1024).
function M.new(self_name, max)
  return setmetatable({
    name = self_name,
    max = max or 1024,
    n = 0,          -- origins in db
    own = {},       -- neighbour -> its incarnation, for this node's live links
    db = {},        -- origin -> { epoch, seq, links = { {node, inc} }, set = { node -> inc } }
    over = {},      -- origin -> an incarnation of it known to be over (see _newer)
    dirty = true,
    hop = {},       -- destination -> first hop (a neighbour's name)
    dist = {},      -- destination -> hops
    order = {},     -- reachable names, nearest first
  }, Routes)
end

-- Records this node's link to `name` (incarnation inc) as up, or as down
-- when inc is nil; true when that changed anything.
function Routes:set_local(name, inc)
  if self.own[name] == inc then return false end
  self.own[name] = inc
  self.dirty = true
  return true
end

-- This node's links as announced: { {node =, inc =} }, sorted by name.
function Routes:local_links()
  local list = {}
  for name, inc in pairs(self.own) do list[#list + 1] = { node = name, inc = inc } end
  sort(list, function(x, y) return x.node < y.node end)
  return list
end

-- Does anything this node knows name `inc` as name's incarnation: its
-- own link, or a stored announcement of a neighbour of name's?
function Routes:_vouched(name, inc)
  if self.own[name] == inc then return true end
  for _, e in pairs(self.db) do
    if e.set[name] == inc then return true end
  end
  return false
end

-- Is an announcement (epoch, seq) from origin news over the stored one?
-- A later incarnation is, by its number (a wall-clock stamp). An earlier
-- number is news too when the nodes linked to origin name that
-- incarnation and none names the stored one: origin restarted with its
-- clock stepped back, and the stored entry is the dead one's — which is
-- then remembered as over, so that its announcements, still flooding
-- around, are not taken back by their bigger number (the two would chase
-- each other round the cluster for ever).
function Routes:_newer(origin, old, epoch, seq)
  if self.over[origin] == epoch and not self:_vouched(origin, epoch) then return false end
  if old == nil then return true end
  if epoch == old.epoch then return seq > old.seq end
  if epoch > old.epoch then return true end
  if self:_vouched(origin, epoch) and not self:_vouched(origin, old.epoch) then
    self.over[origin] = old.epoch
    return true
  end
  return false
end

-- Applies an announcement (links: { {node =, inc =} }); true if it was
-- newer than what the table had (the caller then floods it on), false for
-- a stale one or one about this node, or false, "full" for a new origin
-- past `max`. News of another incarnation of a neighbour makes that
-- neighbour's own stored announcement worthless when it is older, or when
-- nothing names the stored incarnation any more.
function Routes:update(origin, epoch, seq, links)
  local old = self.db[origin]
  if origin == self.name or not self:_newer(origin, old, epoch, seq) then return false end
  if old == nil and self.n >= self.max and not self:_evict() then return false, "full" end
  local set = {}
  for _, l in ipairs(links) do set[l.node] = l.inc end
  if self.db[origin] == nil then self.n = self.n + 1 end
  self.db[origin] = { epoch = epoch, seq = seq, links = links, set = set }
  for _, l in ipairs(links) do
    local e = self.db[l.node]
    if e and e.epoch ~= l.inc and ((e.epoch < l.inc and self.over[l.node] ~= l.inc)
                                   or not self:_vouched(l.node, e.epoch)) then
      self:forget(l.node)
    end
  end
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

-- The link u -> v, with eu = u's announcement, is usable when u names v's
-- current incarnation and v names u's.
function Routes:_confirmed(eu, u, v)
  local ev = self.db[v]
  return ev ~= nil and eu.set[v] == ev.epoch and ev.set[u] == eu.epoch
end

function Routes:_recompute()
  local hop, dist, order = {}, {}, {}
  local queue, head = {}, 1
  for _, l in ipairs(self:local_links()) do
    local n = l.node
    hop[n], dist[n] = n, 1
    order[#order + 1] = n
    queue[#queue + 1] = n
  end
  while head <= #queue do
    local u = queue[head]
    head = head + 1
    local eu = self.db[u]
    -- a neighbour's news counts only if it is from the life we link to
    if eu and (dist[u] > 1 or eu.epoch == self.own[u]) then
      for _, l in ipairs(eu.links) do
        local v = l.node
        if v ~= self.name and dist[v] == nil and self:_confirmed(eu, u, v) then
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

-- Makes room for one origin: forgets one that no route reaches (news
-- nobody confirms: from a node gone, or made up). false when every
-- stored origin is reachable.
function Routes:_evict()
  if self.dirty then self:_recompute() end
  for origin in pairs(self.db) do
    if self.dist[origin] == nil then
      self:forget(origin)
      return true
    end
  end
  return false
end

-- Forgets an origin's announcement (a node that restarted: its old news
-- is void).
function Routes:forget(origin)
  if self.db[origin] then
    self.db[origin] = nil
    self.n = self.n - 1
    self.dirty = true
  end
end

-- How many origins' announcements are stored.
function Routes:size()
  return self.n
end

return M
