-- wrk script for a fixed-count run: stop after REQUESTS responses (with -t1
-- that is the whole run), then print the same RESULT line as report.lua.
local limit = tonumber(os.getenv("REQUESTS") or "100000")
local n = 0
response = function(status, headers, body)
  n = n + 1
  if n >= limit then
    wrk.thread:stop()
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d p999_us=%d socket_errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
