-- luacomm.node.auth: the proofs of the authenticated handshake
-- (docs/PROTOCOL.md §4.1). Both ends hold a shared secret; each sends a
-- fresh random nonce, and each proves it holds the secret with an
-- HMAC-SHA256 over both nonces and both names, labelled with its role so
-- that one side's proof can never stand for the other's. The secret never
-- crosses the wire; OpenSSL does all the cryptography.
local crypto = require("luacomm").crypto

local type, error, tostring = type, error, tostring
local format, pack = string.format, string.pack

local M = {}
M._VERSION = "0.1.0"

M.NONCE_BYTES = 32
M.LABEL = { dialler = "luacomm node auth v2 dialler", acceptor = "luacomm node auth v2 acceptor" }

local function hex(s)
  return (s:gsub(".", function(c) return format("%02x", c:byte()) end))
end

-- Lower-case hex of exactly n bytes -> the bytes, or nil.
function M.unhex(h, n)
  if type(h) ~= "string" or #h ~= 2 * n or h:find("[^0-9a-f]") then return nil end
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

-- A fresh nonce: raw bytes, and as sent (hex).
function M.nonce()
  local raw = crypto.random_bytes(M.NONCE_BYTES)
  return raw, hex(raw)
end

-- The proof of `role` ("dialler" or "acceptor"), as sent (hex):
-- HMAC-SHA256(secret, label || 0x00 || dialler's nonce || acceptor's nonce
-- || u16be(#dialler) || dialler || u16be(#acceptor) || acceptor).
function M.proof(secret, role, nonce_d, nonce_a, dialler, acceptor)
  local data = M.LABEL[role] .. "\0" .. nonce_d .. nonce_a .. pack(">s2", dialler) .. pack(">s2", acceptor)
  return hex(crypto.hmac_sha256(secret, data))
end

-- Does `got` (as received) equal the expected proof? Constant time.
function M.check(secret, got, role, nonce_d, nonce_a, dialler, acceptor)
  if type(got) ~= "string" then return false end
  return crypto.equal_consttime(got, M.proof(secret, role, nonce_d, nonce_a, dialler, acceptor))
end

-- node.new's secret / secret_file -> the secret, or nil; raises on a bad
-- option (at the caller's caller's line).
function M.secret(opts)
  local s, f = opts.secret, opts.secret_file
  if s ~= nil and f ~= nil then error("node.new: give secret or secret_file, not both", 4) end
  if f ~= nil then
    if type(f) ~= "string" then error("node.new: secret_file must be a path", 4) end
    local fh, err = io.open(f, "rb")
    if not fh then error("node.new: secret_file: " .. tostring(err), 4) end
    s = fh:read("a")
    fh:close()
    s = s:gsub("\r?\n$", "")
    if s == "" then error("node.new: secret_file " .. f .. " is empty", 4) end
  end
  if s ~= nil and (type(s) ~= "string" or s == "") then error("node.new: secret must be a non-empty string", 4) end
  return s
end

return M
