-- bench/load/wrk.lua: the request shape of one load run, read from the
-- environment (so bench/load/run needs one script for every scenario), and a
-- one-line JSON report written when wrk finishes.
--
--   LOAD_METHOD    GET, POST, ...            (default GET)
--   LOAD_BODY      request body              (optional)
--   LOAD_HEADERS   "Name: value" lines        (optional, newline separated)
--   LOAD_DELAY_MS  pause per connection before each request (paced runs)
--   LOAD_REPORT    file the JSON report goes to
--   LOAD_BODY_TEMPLATE  a body in which %SUBJECT% becomes u<k> per request, k drawn
--                  Zipf-like over LOAD_ZIPF_N users (exponent LOAD_ZIPF_S, default 1),
--                  or k = 0, 1, 2, ... LOAD_SEQUENTIAL_N - 1 then 0 again
local method = os.getenv("LOAD_METHOD") or "GET"
local body = os.getenv("LOAD_BODY") or ""
local header_lines = os.getenv("LOAD_HEADERS") or ""
local delay_ms = tonumber(os.getenv("LOAD_DELAY_MS") or "0") or 0

wrk.method = method
if body ~= "" then
  wrk.body = body
end
for line in string.gmatch(header_lines, "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end

local template = os.getenv("LOAD_BODY_TEMPLATE") or ""
local zipf_n = tonumber(os.getenv("LOAD_ZIPF_N") or "0") or 0
local sequential_n = tonumber(os.getenv("LOAD_SEQUENTIAL_N") or "0") or 0
local cdf = nil
if zipf_n > 0 then
  local s = tonumber(os.getenv("LOAD_ZIPF_S") or "1") or 1
  cdf = {}
  local total = 0
  for k = 1, zipf_n do
    total = total + 1 / (k ^ s)
    cdf[k] = total
  end
  for k = 1, zipf_n do
    cdf[k] = cdf[k] / total
  end
  math.randomseed(os.time())
end
local counter = 0

-- The next user's index: binary search of the Zipf CDF, or the next in turn.
local function pick()
  if cdf then
    local u, lo, hi = math.random(), 1, zipf_n
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
    end
    return lo - 1
  end
  counter = counter + 1
  return (counter - 1) % math.max(sequential_n, 1)
end

if template ~= "" then
  function request()
    local b = string.gsub(template, "%%SUBJECT%%", "u" .. pick())
    return wrk.format(nil, nil, nil, b)
  end
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local out = assert(io.open(os.getenv("LOAD_REPORT"), "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx_3xx":%d,"socket_errors":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  out:close()
end
