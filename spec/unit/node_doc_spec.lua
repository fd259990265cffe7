-- docs/NODE.md against the code: every option node.new reads (found by
-- watching what it reads, not from a list), every method of a node and
-- every n:stats() key must be documented, so the reference cannot fall
-- behind the library silently.
local node = require "luacomm.node"

local function read_doc()
  local f = assert(io.open("docs/NODE.md"))
  local s = f:read("a")
  f:close()
  return s
end

-- The text of the section whose heading line contains `title`.
local function section(doc, title)
  local start = assert(doc:find(title, 1, true), "no section " .. title)
  local stop = doc:find("\n## ", start + 1, true) or #doc
  return doc:sub(start, stop)
end

-- The table row documenting `key` in text: a line whose first cell names
-- it in backquotes, bare or quoted ("| `a` / `key` |", "| `"key"` |").
local function row(text, key)
  for line in text:gmatch("[^\n]+") do
    local first = line:match("^|([^|]*)|")
    if first and (first:find("`" .. key .. "`", 1, true) or first:find('`"' .. key .. '"`', 1, true)) then
      return line
    end
  end
end

-- Calls node.new with an options table that records every key read.
-- `given` supplies values (name must be a string to get past the first
-- check); a key whose value is a table of its own records as "key.sub".
local function keys_read(given)
  local seen, order = {}, {}
  local function proxy(prefix, values)
    return setmetatable({}, { __index = function(_, k)
      local full = prefix .. tostring(k)
      if not seen[full] then seen[full] = true; order[#order + 1] = full end
      local v = values[k]
      if v == "PROXY" then return proxy(full .. ".", {}) end
      return v
    end })
  end
  local ok = pcall(node.new, proxy("", given))
  return ok, order
end

describe("docs/NODE.md", function()
  local doc = read_doc()

  it("documents every option node.new reads, and the keys of table options", function()
    local ok, top = keys_read({ name = "x" })
    assert.is_true(ok)
    assert.is_true(#top >= 10, "the probe saw too few options: " .. table.concat(top, ", "))
    local opts = section(doc, "## `node.new(opts)`")
    for _, k in ipairs(top) do
      local line = row(opts, k)
      assert.is_truthy(line, "option '" .. k .. "' read by node.new is not in docs/NODE.md")
      -- An option that accepts a table: the keys read from it are named in its row.
      local tab_ok, nested = keys_read({ name = "x", [k] = "PROXY" })
      if tab_ok then
        for _, full in ipairs(nested) do
          local sub = full:match("^" .. k .. "%.(.+)$")
          if sub and not sub:find("^%d") then -- list items are not keys
            assert.is_truthy(line:find(sub, 1, true), "key '" .. full .. "' is not in the row of '" .. k .. "'")
          end
        end
      end
    end
  end)

  it("documents every public method of a node", function()
    local n = node.new{ name = "x" }
    local methods = getmetatable(n).__index
    local count = 0
    for name, v in pairs(methods) do
      if type(v) == "function" and not name:find("^_") then
        count = count + 1
        assert.is_truthy(doc:find("### `n:" .. name .. "(", 1, true), "n:" .. name .. " is not documented")
      end
    end
    assert.is_true(count >= 10)
  end)

  it("documents every key of n:stats()", function()
    local counters = section(doc, "## Counters")
    local n = node.new{ name = "x" }
    for k in pairs(n:stats()) do
      assert.is_truthy(row(counters, k), "n:stats()." .. k .. " is not in docs/NODE.md")
    end
  end)

  it("documents the errors send and request return", function()
    local sending = section(doc, "## Sending")
    local n = node.new{ name = "x", log = { debug = print, info = print, warn = print, error = print } }
    local _, err = n:send("y", "t", {})
    assert.is_truthy(row(sending, err), err)
    local _, err2 = n:request("y", "t", {})
    assert.is_truthy(row(sending, err2), err2)
  end)

  it("is what docs/API.md points to for the node library", function()
    local f = assert(io.open("docs/API.md"))
    local api = f:read("a")
    f:close()
    assert.is_truthy(api:find("(NODE.md)", 1, true))
    assert.is_nil(api:find("CONTRACT", 1, true), "docs/API.md names a file that is not in the repository")
  end)
end)
