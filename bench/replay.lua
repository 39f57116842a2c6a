-- Replays pre-signed Mailgun requests: a body template with @@TS@@ @@TOKEN@@ @@SIG@@ @@MID@@
-- markers, and a values file (one request a line: ts, token, signature, message-id, tab-separated).
-- Each thread takes every nth line, so that no token is sent twice.
-- wrk -s replay.lua URL -- TEMPLATE VALUES NTHREADS CONTENT_TYPE
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local tpl = f:read("*a")
  f:close()
  segs, keys = {}, {}
  local pos = 1
  while true do
    local s, e, key = string.find(tpl, "@@(%u+)@@", pos)
    if not s then break end
    segs[#segs + 1] = string.sub(tpl, pos, s - 1)
    keys[#keys + 1] = key
    pos = e + 1
  end
  tail = string.sub(tpl, pos)
  local nthreads = tonumber(args[3])
  vals = {}
  local i = 0
  for line in io.lines(args[2]) do
    if i % nthreads == id - 1 then
      local ts, tok, sig, mid = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)")
      vals[#vals + 1] = { TS = ts, TOKEN = tok, SIG = sig, MID = mid }
    end
    i = i + 1
  end
  n = 0
  reused = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = args[4]
end

function request()
  n = n + 1
  local idx = n
  if idx > #vals then
    reused = reused + 1
    idx = ((n - 1) % #vals) + 1
  end
  local v = vals[idx]
  local parts = {}
  for j = 1, #segs do
    parts[#parts + 1] = segs[j]
    parts[#parts + 1] = v[keys[j]]
  end
  parts[#parts + 1] = tail
  return wrk.format(nil, nil, nil, table.concat(parts))
end

function done(summary, latency, requests)
  local generated, again = 0, 0
  for _, t in ipairs(threads) do
    generated = generated + t:get("n")
    again = again + t:get("reused")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"status_errors":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"generated":%d,"reused":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout, generated, again))
end
