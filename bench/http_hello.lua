-- The "hello" handler of the HTTP bench: luacomm http.serve on the given
-- port, answering every request with 200 "hello".
local http = require "luacomm.http"
local port = ...
assert(http.serve("127.0.0.1:" .. assert(port, "usage: http_hello.lua PORT"),
                  function() return 200, nil, "hello" end, { backlog = 1024 }))
