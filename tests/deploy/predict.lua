-- wrk script for tests/deploy/scale.py: every request is the README's first
-- example, POST /predict?text=... (the path and query come from wrk's URL).
-- wrk counts answers that are not 2xx/3xx itself ("Non-2xx or 3xx responses").
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = ""
