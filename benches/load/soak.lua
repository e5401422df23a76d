-- wrk script of the soak (soak.sh): well-behaved clients at a fixed pace.
-- Each connection waits SOAK_DELAY_MS before each request (0: flat out),
-- and the requests cycle through a cookieless GET, a GET pinned to staging
-- and a POST with a whole 100-byte body. Prints one RESULT line, as
-- report.lua does.
local delay_ms = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
local body = string.rep("x", 100)
local reqs = {
  wrk.format("GET", "/", {["Host"] = "bench.local"}),
  wrk.format("GET", "/", {["Host"] = "bench.local", ["Cookie"] = "x-ms-routing-name=staging"}),
  wrk.format("POST", "/upload", {["Host"] = "bench.local", ["Content-Type"] = "text/plain"}, body),
}
local n = 0

request = function()
  n = n + 1
  return reqs[n % #reqs + 1]
end

if delay_ms > 0 then
  delay = function()
    return delay_ms
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d socket_errors=%d non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status,
    e.connect, e.read, e.write, e.timeout))
end
