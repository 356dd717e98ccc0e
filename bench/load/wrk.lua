-- bench/load/wrk.lua: the request shape of one load run, read from the
-- environment (so bench/load/run needs one script for every scenario), and a
-- one-line JSON report written when wrk finishes.
--
--   LOAD_METHOD    GET, POST, ...            (default GET)
--   LOAD_BODY      request body              (optional)
--   LOAD_HEADERS   "Name: value" lines        (optional, newline separated)
--   LOAD_DELAY_MS  pause per connection before each request (paced runs)
--   LOAD_REPORT    file the JSON report goes to
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
