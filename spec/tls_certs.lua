-- Certificates for the TLS specs, made at test time with the `openssl`
-- command in a fresh temp dir (no key is ever kept in the repo). One set
-- per busted process:
--   ca.pem            the test CA;             other_ca.pem  an unrelated CA
--   server.pem/.key   CN=localhost, DNS:localhost, IP:127.0.0.1, IP:::1
--   client.pem/.key   CN=client1 (for mutual TLS)
--   dnsonly.pem/.key  DNS:localhost only: not valid for 127.0.0.1
--   other.pem/.key    CN=other, DNS:other: the wrong name
--   rogue.pem/.key    like server.pem, but signed by other_ca
--   expired.pem/.key  like server.pem, but its validity ended in 2001
local helpers = require "helpers"

local M = {}
local dir

local function sh(cmd)
  local ok = os.execute("(" .. cmd .. ") >/dev/null 2>&1")
  assert(ok, "command failed: " .. cmd)
end

-- An EC P-256 key and a CSR for subject cn.
local function request(name, cn)
  sh(("cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.csr -subj /CN=%s")
    :format(helpers.shquote(dir), name, name, cn))
end

local function ca(name)
  sh(("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3"
    .. " -keyout %s.key -out %s.pem -subj /CN=%s-luacomm-test"):format(helpers.shquote(dir), name, name, name))
end

local function sign(name, cn, san, issuer)
  request(name, cn)
  helpers.writefile(dir .. "/" .. name .. ".ext", "subjectAltName=" .. san .. "\n")
  sh(("cd %s && openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -days 3 -extfile %s.ext -out %s.pem")
    :format(helpers.shquote(dir), name, issuer or "ca", issuer or "ca", name, name))
end

-- A certificate whose validity lies in the past, through `openssl ca`
-- (the only stock command that takes explicit dates).
local function expired(name)
  request(name, "localhost")
  helpers.writefile(dir .. "/ca.cnf", table.concat({
    "[ca]", "default_ca = d", "[d]", "database = index.txt", "new_certs_dir = .",
    "serial = serial", "default_md = sha256", "policy = p", "copy_extensions = none",
    "[p]", "commonName = supplied", "[x]", "subjectAltName = DNS:localhost,IP:127.0.0.1", "" }, "\n"))
  helpers.writefile(dir .. "/index.txt", "")
  helpers.writefile(dir .. "/serial", "1000\n")
  sh(("cd %s && openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in %s.csr -out %s.pem"
    .. " -extensions x -startdate 20000101000000Z -enddate 20010101000000Z -notext")
    :format(helpers.shquote(dir), name, name))
end

-- The directory holding them all (made on first use).
function M.dir()
  if dir then return dir end
  dir = helpers.tmpdir()
  -- Removed when the process's Lua state closes.
  M._cleanup = setmetatable({}, { __gc = function() os.execute("rm -rf " .. helpers.shquote(dir)) end })
  ca("ca")
  ca("other_ca")
  sign("server", "localhost", "DNS:localhost,IP:127.0.0.1,IP:::1")
  sign("client", "client1", "DNS:client1")
  sign("dnsonly", "localhost", "DNS:localhost")
  sign("other", "other", "DNS:other")
  sign("rogue", "localhost", "DNS:localhost,IP:127.0.0.1", "other_ca")
  expired("expired")
  return dir
end

-- The path of file f in that directory.
function M.path(f)
  return M.dir() .. "/" .. f
end

-- Server-side tls options for certificate `name` (default "server").
function M.server(name, extra)
  local t = { cert = M.path((name or "server") .. ".pem"), key = M.path((name or "server") .. ".key") }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- Node tls options (node.new's `tls`) with a certificate made for `cn`
-- (CN and DNS SAN, signed by the test CA, or by `issuer`), under the file
-- name `file` (default cn).
function M.node(cn, file, issuer)
  file = file or cn
  if not io.open(M.path(file .. ".pem")) then sign(file, cn, "DNS:" .. cn, issuer) end
  return { cert = M.path(file .. ".pem"), key = M.path(file .. ".key"), ca = M.path("ca.pem") }
end

-- Client-side tls options trusting the test CA.
function M.client(extra)
  local t = { ca = M.path("ca.pem") }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

return M
