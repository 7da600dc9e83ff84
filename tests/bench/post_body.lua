-- wrk -s tests/bench/post_body.lua URL -- BODY_FILE: POSTs the JSON body in
-- BODY_FILE on every request (scripts/bench_http.sh writes a CLIP zero-shot
-- request there, its image in base64) and ends with the same JSON summary
-- line as post.lua, whose done() it reuses.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "post.lua")

-- post.lua's empty body is a query-string POST's; wrk.format sets this one's length.
wrk.headers["Content-Length"] = nil
wrk.headers["Content-Type"] = "application/json"

local req

-- Runs in every wrk thread with the words after "--": read the body once,
-- not per request.
function init(args)
  local f = assert(io.open(assert(args[1], "usage: wrk -s post_body.lua URL -- BODY_FILE"), "rb"))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", nil, nil, body)
end

function request()
  return req
end
