-- A module of the service: it lives in the script's folder, so a reload
-- runs it again too.
local G = {}

function G.word() return "hello" end

return G
