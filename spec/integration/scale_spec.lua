-- CONTRACT §11 "Scale": 100 nodes on one machine in a partial mesh — each
-- dials 3 others: the next one (a ring, so the mesh is connected) and two
-- picked at random (seeded) — converge: every node routes to every other,
-- and a request crosses the mesh. All 100 nodes run in this one process
-- (stock lua5.4), over real TCP on loopback; bench/scale.lua measures the
-- same mesh for docs/SCALING.md.
local comm = require "luacomm"
local node = require "luacomm.node"
local H = require "helpers"

local N, DIAL = 100, 3

local quiet = { debug = function() end, info = function() end, warn = function() end, error = comm.log.error }

describe("a 100-node partial mesh", function()
  it("converges: every node routes to every other, and a request crosses it", function()
    H.run(function()
      local rng = 42
      local function random(n) -- a small LCG: the same mesh on every run
        rng = (rng * 1103515245 + 12345) % 2147483648
        return rng % n + 1
      end
      local ports, held = {}, {}
      for i = 1, N do
        held[i] = assert(comm.listen("127.0.0.1:0"))
        ports[i] = select(2, held[i]:addr())
      end
      for _, l in ipairs(held) do l:close() end
      local nodes = {}
      for i = 1, N do
        local dial, seen = { i % N + 1 }, { [i] = true, [i % N + 1] = true }
        while #dial < DIAL do
          local j = random(N)
          if not seen[j] then
            seen[j] = true
            dial[#dial + 1] = j
          end
        end
        local peers = {}
        for k, j in ipairs(dial) do peers[k] = "127.0.0.1:" .. ports[j] end
        nodes[i] = node.new{ name = "n" .. i, listen = "127.0.0.1:" .. ports[i], peers = peers, heartbeat = 0.5,
                             timeout = 2, log = quiet }
        nodes[i]:on("where", function(_, msg) return { at = "n" .. i, hops = msg.hops } end)
      end
      local ok, err = pcall(function()
        for i = 1, N do assert(nodes[i]:start()) end
        local missing
        local done = H.wait_until(function()
          for i, n in ipairs(nodes) do
            local k = 0
            for _ in pairs(n:routes()) do k = k + 1 end
            if k < N - 1 then
              missing = ("n%d routes to %d node(s) of %d"):format(i, k, N - 1)
              return false
            end
          end
          return true
        end, 90, 0.1)
        assert(done, missing)
        -- the farthest node from n1, reached through the mesh
        local far, hops = nil, 0
        for name, r in pairs(nodes[1]:routes()) do
          if r.hops > hops then far, hops = name, r.hops end
        end
        assert(hops >= 2, "a partial mesh of 100 has routes of several hops")
        local rep = assert(nodes[1]:request(far, "where", nil, { timeout = 5, retries = 2 }))
        assert.are.equal(far, rep.at)
        assert.are.equal(hops - 1, rep.hops)
        for _, n in ipairs(nodes) do assert.are.equal(0, n:stats().bad_input) end
      end)
      for _, n in ipairs(nodes) do n:stop() end
      if not ok then error(err, 0) end
    end, 120)
  end)
end)
