-- wrk script for bench/run.sh: POSTs the JSON body in file $WRK_BODY, with the extra
-- headers in $WRK_HEADERS ("name: value|name: value"), and prints one JSON line at the end.
wrk.method = "POST"
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for h in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^|]+") do
  local k, v = h:match("^%s*(.-)%s*:%s*(.-)%s*$")
  if k then wrk.headers[k] = v end
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  local ok = summary.requests - errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"errors":%d,"status_errors":%d,"rps":%.3f,' ..
    '"lat_p50_ms":%.3f,"lat_p90_ms":%.3f,"lat_p99_ms":%.3f}\n',
    ok, errors, e.status, ok / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
