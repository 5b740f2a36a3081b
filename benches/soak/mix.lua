-- A mixed request stream for wrk (the F21 soak): mostly small GETs, some 64 KiB downloads, 16 KiB POSTs,
-- upstream resets mid-body (F9), slow answers (F10) and upstream 404s.
local counter = 0
local post_body = string.rep("p", 16384)

request = function()
  counter = counter + 1
  local r = counter % 20
  if r < 14 then
    return wrk.format("GET", "/ok")
  elseif r < 16 then
    return wrk.format("GET", "/bytes?n=65536")
  elseif r == 16 then
    return wrk.format("POST", "/echo", {["Content-Type"] = "application/octet-stream"}, post_body)
  elseif r == 17 then
    return wrk.format("GET", "/reset")
  elseif r == 18 then
    return wrk.format("GET", "/slow?ms=20")
  else
    return wrk.format("GET", "/no-such-path")
  end
end
