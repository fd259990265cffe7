-- The frame reader, through the real read path: the input, cut into
-- reads and writes of a few bytes or none at all (core.max_io), goes over
-- a real unix socket into conn:recv (or conn:read), and every frame must
-- come out as an independent reading of the bytes says, each echoed back
-- whole, and the stream must end with the right error.
--
-- Input: byte 1 picks the I/O piece size and the call (recv, or read of
-- a fixed size), byte 2 max_frame or the read size; the rest is the stream.
local comm = require "luacomm"
local core = require "luacomm.core"

local MAX_FRAMES = { 0, 7, 300, 16 * 1024 * 1024 }
local seq = 0

-- What conn:recv must return for this stream: the frames, then the error.
local function frames_oracle(stream, max_frame)
  local out, pos = {}, 1
  while true do
    if pos > #stream then return out, "closed" end
    if #stream - pos + 1 < 4 then return out, "truncated" end
    local len = string.unpack(">I4", stream, pos)
    if len > max_frame then return out, "frame too large" end
    if #stream - pos + 1 < 4 + len then return out, "truncated" end
    out[#out + 1] = stream:sub(pos + 4, pos + 3 + len)
    pos = pos + 4 + len
  end
end

local function reads_oracle(stream, n)
  local out, pos = {}, 1
  while #stream - pos + 1 >= n do
    out[#out + 1] = stream:sub(pos, pos + n - 1)
    pos = pos + n
    if n == 0 and #out > 3 then break end
  end
  return out, pos > #stream and "closed" or "truncated"
end

local function check(cond, ...)
  if not cond then error(string.format(...), 2) end
end

return function(data)
  core.log_level("error")
  local mode, sel = data:byte(1) or 0, data:byte(2) or 0
  local stream = data:sub(3)
  core.max_io(mode % 4 == 0 and 0 or (mode >> 2) % 7 + 1)
  local framed = mode & 0x80 == 0
  local max_frame = MAX_FRAMES[sel % 4 + 1]
  local read_n = sel % 9
  local want, want_err
  if framed then want, want_err = frames_oracle(stream, max_frame)
  else want, want_err = reads_oracle(stream, read_n) end
  seq = seq + 1
  local path = ("/tmp/luacomm-fuzz-frames-%s-%d.sock"):format(tostring({}):match("0x(%x+)"), seq)
  comm.run(function()
    local l = assert(comm.listen("unix:" .. path, { max_frame = max_frame }))
    local c = assert(comm.connect("unix:" .. path, { max_frame = max_frame }))
    local s = assert(l:accept(5))
    l:close()
    local got, err = {}, nil
    local server = comm.spawn(function()
      while true do
        local f, e
        if framed then f, e = s:recv(5) else f, e = s:read(read_n, 5) end
        if f == nil then err = e; return end
        got[#got + 1] = f
        if framed then assert(s:send(f)) end
        if not framed and #got >= #want then
          if read_n == 0 then err = want_err; return end
        end
      end
    end)
    assert(c:write(stream))
    if framed then
      for i = 1, #want do -- every echo, even when a bad header follows
        local f, e = c:recv(5)
        check(f == want[i], "echo %d: %s", i, f and ("%d bytes, not the ones sent"):format(#f) or e)
      end
    end
    c:close()
    check(server:join(10), "the reader did not end")
    s:close()
    check(#got == #want, "%d frames read, %d sent", #got, #want)
    for i = 1, #want do check(got[i] == want[i], "frame %d differs", i) end
    check(err == want_err, "ended with %s, not %s", tostring(err), want_err)
  end)
  local st = comm.stats()
  check(st.task_errors == 0, "a task failed")
  check(st.buffered_in == 0, "%d bytes of input still counted", st.buffered_in)
end
