-- luacomm.registry: what the process has started, for whoever reports on
-- it (comm.metrics). No dependencies, so any library may register here —
-- luacomm.node does in n:start() and n:stop() — at the cost of a table write.
return {
  nodes = setmetatable({}, { __mode = "k" }), -- started nodes; weak: a dropped node is not kept for us
}
