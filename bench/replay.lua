-- Replays pre-signed Mailgun requests: a body template with @@NAME@@ markers (TS, TOKEN, SIG,
-- MID, RCPT), and a values file: a header line naming the markers, then one request a line
-- (tab-separated, in the header's order). Each thread takes every nth line, so that no token is
-- sent twice. Answers are counted by class: 2xx, 429, and any other status (the first one kept).
-- wrk -s replay.lua URL -- TEMPLATE VALUES NTHREADS CONTENT_TYPE
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function split(line)
  local out = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    out[#out + 1] = field
  end
  return out
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
  local names = nil
  local i = 0
  for line in io.lines(args[2]) do
    if names == nil then
      names = split(line)
    else
      if i % nthreads == id - 1 then
        local fields, v = split(line), {}
        for j, name in ipairs(names) do
          v[name] = fields[j]
        end
        vals[#vals + 1] = v
      end
      i = i + 1
    end
  end
  n = 0
  reused = 0
  ok = 0
  limited = 0
  other = 0
  first_other = 0
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

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  elseif status == 429 then
    limited = limited + 1
  else
    other = other + 1
    if first_other == 0 then first_other = status end
  end
end

function done(summary, latency, requests)
  local generated, again, answered_ok, answered_429, answered_other, first = 0, 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    generated = generated + t:get("n")
    again = again + t:get("reused")
    answered_ok = answered_ok + t:get("ok")
    answered_429 = answered_429 + t:get("limited")
    answered_other = answered_other + t:get("other")
    if first == 0 then first = t:get("first_other") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"status_errors":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"generated":%d,"reused":%d,' ..
    '"ok":%d,"limited":%d,"other":%d,"first_other":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout, generated, again,
    answered_ok, answered_429, answered_other, first))
end
