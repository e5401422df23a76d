-- wrk script: one machine-readable line per run, with the latency
-- percentiles wrk's --latency does not print (p99.9) and every error kind.
-- BODY_BYTES=N (run.sh sets it for the `-post` targets) makes every request
-- a POST with an N-byte body.
local body_bytes = tonumber(os.getenv("BODY_BYTES") or "")
if body_bytes then
  wrk.method = "POST"
  wrk.body = string.rep("x", body_bytes)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d p999_us=%d socket_errors=%d non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status,
    e.connect, e.read, e.write, e.timeout))
end
