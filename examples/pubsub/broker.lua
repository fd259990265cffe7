-- A pub/sub broker whose slow subscribers cannot hold anyone up.
--   luacomm examples/pubsub/broker.lua [PORT]      (default 7100)
--
-- Every frame a client sends is a command:
--   "SUB topic"          receive what is published on topic
--   "PUB topic payload"  publish payload: each subscriber gets "topic payload"
--   "STATS"              the broker answers with its counters, as JSON
--
-- One task reads each connection (a connection has one reader) and one
-- task fans publications out. There is no writer task per subscriber: the
-- fan-out hands each subscriber its frame with conn:try_send, which never
-- waits. A subscriber that does not keep up has its unsent output over the
-- connection's high-water mark; try_send then says "full" and that
-- subscriber misses the message (counted in `dropped`), while everyone
-- else gets it at once. comm.select lets the fan-out task wait for "a
-- publication, or time to log the counters" in one call.
local comm = require "luacomm"

local M = {}

local HWM = 256 * 1024 -- per subscriber: how far behind it may fall

function M.start(state, port)
  state.topics = {}   -- topic -> { [conn] = true }
  state.counters = { published = 0, delivered = 0, dropped = 0, subscribers = 0 }
  state.pubs = comm.channel(1024) -- publications, waiting for the fan-out
  local listener = assert(comm.serve("127.0.0.1:" .. tonumber(port or 7100), function(conn)
    M.client(state, conn)
  end, { hwm = HWM }))
  comm.spawn(M.fan_out, state)
  comm.log.info("pubsub broker listening on %s:%d", listener:addr())
end

-- Reads one client's commands until it goes away.
function M.client(state, conn)
  local mine = {}
  while true do
    local frame = conn:recv()
    if not frame then break end
    M.command(state, conn, mine, frame)
  end
  for topic in pairs(mine) do state.topics[topic][conn] = nil end
  if next(mine) then state.counters.subscribers = state.counters.subscribers - 1 end
end

function M.command(state, conn, mine, frame)
  local verb, topic, payload = frame:match("^(%u+) ?(%S*) ?(.*)$")
  if verb == "SUB" and topic ~= "" then
    if next(mine) == nil then state.counters.subscribers = state.counters.subscribers + 1 end
    mine[topic] = true
    state.topics[topic] = state.topics[topic] or {}
    state.topics[topic][conn] = true
  elseif verb == "PUB" and topic ~= "" then
    state.counters.published = state.counters.published + 1
    state.pubs:put(topic .. " " .. payload) -- waits only while 1024 are queued
  elseif verb == "STATS" then
    local c = state.counters
    conn:send(comm.json.encode{ published = c.published, delivered = c.delivered, dropped = c.dropped,
                                subscribers = c.subscribers, tasks = comm.stats().tasks })
  else
    conn:send("ERR unknown command")
  end
end

-- The one task that writes to subscribers.
function M.fan_out(state)
  local c = state.counters
  while true do
    local which, msg = comm.select({ { state.pubs, "get" }, { "after", 10 } })
    if which == 1 then
      if msg == nil then return end -- the channel was closed
      local topic = msg:match("^%S+")
      for conn in pairs(state.topics[topic] or {}) do
        if conn:try_send(msg) then c.delivered = c.delivered + 1
        else c.dropped = c.dropped + 1 end -- "full" (slow) or "closed"
      end
    else
      comm.log.info("pubsub: %d published, %d delivered, %d dropped, %d subscribers",
                    c.published, c.delivered, c.dropped, c.subscribers)
    end
  end
end

function M.stop(state)
  state.pubs:close()
end

return M
