"""Operations: the access log (text and JSON), /metrics, /health while
loading, /openapi.json and /docs."""

import json
import re
import subprocess
import time

from harness import (BINARY, DEMO, HOST, REPO, SLOW, TINY, Daemon, check, config, eq, expect, fail, metric, request,
                     test, wait_for)

# ---- the access log ---------------------------------------------------------------------

TEXT_LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info (\S+) ("(?:[^"\\]|\\.)*") '
                       r'(\d{3}) (\d+)B (\d+\.\d\d)ms(?: model=(\S+))?$')


def access_lines(d):
    out = []
    for line in d.stderr().splitlines():
        m = TEXT_LINE.match(line)
        if m:
            out.append((m.group(1), json.loads(m.group(2)), int(m.group(3)), int(m.group(4)),
                        m.group(6)))
    return out


@test()
def access_log_text(d):
    r = d.post("/models/demo/predict?text=logged")
    expect(r, 200)
    expect(d.get("/access-log-probe"), 404)
    expect(d.get("/x%22y%0Az"), 404)  # a path that could forge a line if not escaped
    want = [("POST", "/models/demo/predict", 200, len(r.body), "demo"),
            ("GET", "/access-log-probe", 404, 22, None),
            ("GET", '/x"y\nz', 404, 22, None)]
    wait_for("the access lines", lambda: all(w in access_lines(d) for w in want), 5)
    check(not any(line.startswith("z") for line in d.stderr().splitlines()),
          "a newline in the path did not break the log line")


config("json_log", ["--model", "tiny=" + TINY, "--log-format", "json"])


@test(daemon="json_log")
def access_log_json(d):
    r = d.post("/predict", b'{"inputs": "logged"}')
    expect(r, 200)
    expect(d.get("/x%22y%0Az"), 404)

    def entries():
        lines = d.stderr().splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                fail("a log line is not JSON: %r" % line)
        return out

    def found():
        # The line is written once the answer has left: it may follow it.
        es = [e for e in entries() if e.get("event") == "access"]
        p = [e for e in es if e.get("path") == "/predict"]
        o = [e for e in es if e.get("status") == 404]
        return p and o and (p[-1], o[-1])

    predict, other = wait_for("the two access entries", found, 5)
    eq(sorted(predict), ["bytes", "duration_ms", "event", "level", "method", "model", "path",
                         "status", "ts"], "access entry keys")
    eq((predict["method"], predict["path"], predict["status"], predict["bytes"], predict["model"],
        predict["level"]), ("POST", "/predict", 200, len(r.body), "tiny", "info"), "predict entry")
    check(isinstance(predict["duration_ms"], (int, float)) and predict["duration_ms"] >= 0,
          "duration_ms is a number")
    check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", predict["ts"]), "ts is ISO 8601")
    eq((other["path"], other["status"], other["model"]), ('/x"y\nz', 404, ""), "404 entry")
    check(any(e.get("msg", "").startswith("ready: ") for e in entries()),
          "the other log lines are JSON too")


config("no_access_log", ["--model", "tiny=" + TINY, "--access-log", "false"])


@test(daemon="no_access_log")
def access_log_off(d):
    expect(d.post("/predict?text=quiet"), 200)
    expect(d.get("/not-logged"), 404)
    time.sleep(0.2)
    eq(access_lines(d), [], "access lines with --access-log false")
    check("not-logged" not in d.stderr(), "the path appears nowhere")


# ---- /metrics and /health --------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (\S+)$')


@test()
def metrics_format(d):
    r = d.get("/metrics")
    expect(r, 200, content_type="text/plain; version=0.0.4; charset=utf-8")
    text = r.body.decode("utf-8")
    check(text.endswith("\n"), "ends with a newline")
    typed = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            check(len(parts) == 4, "comment line %r" % line)
            if parts[1] == "TYPE":
                check(parts[3] in ("counter", "gauge", "histogram"), "type in %r" % line)
                typed[parts[2]] = parts[3]
            continue
        m = SAMPLE.match(line)
        check(m, "not a sample line: %r" % line)
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        check(name in typed or base in typed, "sample %s before its # TYPE" % name)
        float(m.group(3))  # a number, +Inf or NaN
    for model in ("tiny", "demo"):
        check(any(line.startswith("predictd_model_loaded{model=\"%s\"" % model) and
                  line.endswith(" 1") for line in text.splitlines()), "model_loaded for " + model)
    series = 'predictd_requests_total{model="demo",endpoint="/models/{name}/predict",status="200"}'
    before = metric(text, series) or 0.0
    expect(d.post("/models/demo/predict?text=count%20me"), 200)
    eq(metric(d.metrics(), series), before + 1, "the request counter moved by one")


@test(daemon=None)
def health_while_loading():
    # Before the models are loaded, /health and /predict answer 503; once
    # /health says ok it stays ok.
    d = Daemon(["--model", "demo=" + DEMO, "--model", "again=" + DEMO, "--model", "tiny=" + TINY],
               label="loading")
    d.spawn()
    seen = set()
    deadline = time.monotonic() + 30 * SLOW
    while time.monotonic() < deadline:
        try:
            h = request(d.port, "GET", "/health", timeout=5)
            p = request(d.port, "POST", "/predict?text=early", timeout=5)
        except OSError as e:
            if seen or not d.alive():
                code = d.wait(2)
                fail("the daemon stopped answering (%s: %s); exit status %s"
                     % (type(e).__name__, e, code))
            time.sleep(0.005)  # not listening yet
            continue
        if h.status == 503:
            check("ok" not in seen, "/health went back to 503")
            expect(h, 503, '{"status":"loading"}')
            if p.status != 200:  # 200 if the models finished loading in between
                expect(p, 503, '{"detail":"Model is loading"}')
            seen.add("loading")
        else:
            expect(h, 200, '{"status":"ok"}')
            seen.add("ok")
            break
    check("ok" in seen, "the daemon became ready")
    # Three models take a few tenths of a second: time enough to be seen loading.
    check("loading" in seen, "/health never answered 503 while the models loaded")
    d.stop()


# ---- /openapi.json and /docs ----------------------------------------------------------------

# The nine routes every predictd serves, and the routes of later tasks that
# a build may serve: each served one must be in the document.
REQUIRED = {"/predict": "post", "/models/{name}/predict": "post", "/tokenize": "post",
            "/models/{name}/tokenize": "post", "/models": "get", "/health": "get",
            "/metrics": "get", "/openapi.json": "get", "/docs": "get"}
OPTIONAL = {"/generate": "post", "/generate_stream": "post", "/models/{name}/generate": "post",
            "/models/{name}/generate_stream": "post", "/v1/completions": "post",
            "/embed": "post", "/models/{name}/embed": "post", "/v2": "get",
            "/v2/health/live": "get", "/v2/health/ready": "get", "/v2/models/{name}": "get",
            "/v2/models/{name}/ready": "get", "/v2/models/{name}/infer": "post"}


def routed_methods(d, path):
    """The methods the server routes for an OpenAPI path (lower case), from
    the Allow header of a 405 to a method no route uses; None for a 404."""
    r = request(d.port, "PATCH", path.replace("{name}", "tiny"))
    if r.status == 404:
        return None
    expect(r, 405)
    methods = {m.strip().lower() for m in r.header("Allow").split(",")}
    return methods - {"head"}


@test()
def openapi_document(d):
    r = d.get("/openapi.json")
    expect(r, 200)
    doc = r.json()
    check(str(doc.get("openapi", "")).startswith("3."), "an OpenAPI 3 document")
    paths = doc["paths"]
    for path, method in REQUIRED.items():
        check(path in paths, "the document lists %s" % path)
        eq(sorted(paths[path]), [method], "methods of " + path)
    # Every path in the document is served, with exactly its methods ...
    for path, ops in paths.items():
        eq(routed_methods(d, path), set(ops), "methods the server routes for " + path)
    # ... and every route the server has is in the document.
    missing = [path for path in OPTIONAL if path not in paths and routed_methods(d, path)]
    check(not missing, "the server routes %s but the document omits them" % ", ".join(missing))
    # Every $ref resolves inside the document.
    refs = re.findall(r'"\$ref":\s*"#/([^"]+)"', r.body.decode())
    check(refs, "the document uses $refs")
    for ref in refs:
        node = doc
        for part in ref.split("/"):
            check(isinstance(node, dict) and part in node, "$ref #/%s resolves" % ref)
            node = node[part]


@test()
def docs_page(d):
    r = d.get("/docs")
    expect(r, 200, content_type="text/html; charset=utf-8")
    html = r.body.decode("utf-8")
    check(html.lower().startswith("<!doctype html>"), "an HTML document")
    check("http://" not in html and "https://" not in html, "no absolute URL in /docs")
    for attr, url in re.findall(r'\b(src|href|action)\s*=\s*["\']([^"\']*)["\']', html, re.I):
        check(url.startswith("/") and not url.startswith("//") or url.startswith("#"),
              "%s=%r is not a same-site link" % (attr, url))
    check("/openapi.json" in html, "links the OpenAPI document")
    r = request(d.port, "HEAD", "/docs")
    expect(r, 200, b"", content_type="text/html; charset=utf-8")



@test()
def second_daemon_on_a_port_fails(d):
    # A second daemon started on a port in use must fail at start-up, not
    # share the port (SO_REUSEPORT) and silently take half the traffic.
    p = subprocess.run([BINARY, "--model", "tiny=" + TINY, "--host", HOST, "--port", str(d.port)],
                       cwd=REPO, capture_output=True, timeout=30 * SLOW)
    check(p.returncode != 0, "the second daemon exited with an error")
    check(b"cannot listen" in p.stderr and b"in use" in p.stderr,
          "the error says why: %r" % p.stderr[-300:])
    expect(d.get("/health"), 200, '{"status":"ok"}')
