-- wrk -s tests/bench/post.lua URL: POSTs with the text in the query string, as
-- the FastAPI service's clients do, and ends with one JSON summary line.
-- WRK_METHOD=GET makes it a GET (the front end alone: GET /health).
wrk.method = os.getenv("WRK_METHOD") or "POST"
wrk.headers["Content-Length"] = "0"

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    'WRKJSON {"requests":%d,"rps":%.1f,"p50_ms":%.2f,"p99_ms":%.2f,"errors":%d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.connect + summary.errors.read + summary.errors.write + non2xx + summary.errors.timeout))
end
