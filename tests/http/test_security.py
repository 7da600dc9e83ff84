"""API keys and the Open Inference Protocol (KServe v2) endpoints."""

import http.client
import json

import time

from harness import (HOST, TINY, Daemon, check, config, eq, expect, oracle, read_response, request,
                     test)

config("api_key", ["--model", "tiny=" + TINY, "--api-key", "s3cret-key"])

KEY = {"Authorization": "Bearer s3cret-key"}


class KeyedDaemon(Daemon):
    """A daemon whose /health itself needs the key (--protect-ops)."""

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if request(self.port, "GET", "/health", headers=KEY, timeout=2).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False


@test(daemon="api_key")
def api_key_required(d):
    r = d.post("/predict?text=hello")
    expect(r, 401, '{"detail":"Not authenticated"}')
    eq(r.header("WWW-Authenticate"), "Bearer", "WWW-Authenticate")
    expect(d.post("/predict?text=hello", headers={"Authorization": "Bearer s3cret-kez"}), 401,
           '{"detail":"Invalid API key"}')
    expect(d.post("/predict?text=hello", headers={"Authorization": "Bearer s3cret-key-longer"}), 401,
           '{"detail":"Invalid API key"}')
    expect(d.post("/predict?text=hello", headers={"Authorization": "Basic czNjcmV0LWtleQ=="}), 401,
           '{"detail":"Invalid API key"}')
    expect(d.post("/predict?text=hello", headers={"Authorization": "Bearer s3cret-key"}), 200,
           oracle(text="hello")[0])
    eq(d.get("/health").status, 200, "/health stays open")
    eq(d.get("/metrics").status, 200, "/metrics stays open")
    # The Open Inference Protocol's health APIs are probes too (KServe's
    # readinessProbe is the model's ready route).
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/tiny/ready"]:
        eq(d.get(path).status, 200, "%s stays open" % path)
    eq(d.get("/v2/models/tiny").status, 401, "/v2/models/tiny needs the key")
    eq(d.get("/models").status, 401, "/models needs the key")


@test(daemon="api_key")
def refused_before_the_body(d):
    # A request its headers refuse (no key, unknown path or model) is answered
    # at once: the body it announces is never awaited nor buffered, so
    # clients without the key cannot hold the server's memory.
    cases = [("/predict", {}, 401, '{"detail":"Not authenticated"}'),
             ("/nowhere", KEY, 404, '{"detail":"Not Found"}'),
             ("/models/nope/predict", KEY, 404, '{"detail":"Model \'nope\' not found"}')]
    for path, headers, status, body in cases:
        conn = http.client.HTTPConnection(HOST, d.port, timeout=5)
        try:
            conn.putrequest("POST", path)
            for k, v in list(headers.items()) + [("Content-Length", "10000000")]:
                conn.putheader(k, v)
            conn.endheaders()  # and no body
            expect(read_response(conn, "POST"), status, body)
        finally:
            conn.close()


@test(daemon=None)
def api_key_protects_ops():
    d = KeyedDaemon(["--model", "tiny=" + TINY, "--api-key", "s3cret-key", "--protect-ops"],
                    label="protect_ops")
    d.start()
    try:
        eq(d.get("/health").status, 401, "/health with --protect-ops")
        eq(d.get("/metrics").status, 401, "/metrics with --protect-ops")
        eq(d.get("/health", headers=KEY).status, 200, "with the key")
    finally:
        d.stop()


@test()
def kserve_v2_nul_in_text(d):
    # A NUL inside a text is kept whole, as the other routes keep it.
    text = "a gripping\u0000 film"
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    r = d.post("/v2/models/tiny/infer", body=json.dumps(body))
    eq(r.status, 200, "status (%r)" % r.body[:200])
    outs = {o["name"]: o for o in r.json()["outputs"]}
    want = json.loads(oracle(body=json.dumps({"inputs": text}))[0])[0]
    eq(outs["label"]["data"][0], want["label"], "label")
    check(abs(outs["score"]["data"][0] - want["score"]) < 1e-5, "score")
    cut = json.loads(oracle(body=json.dumps({"inputs": "a gripping"}))[0])[0]
    check(abs(cut["score"] - want["score"]) > 1e-6, "the text past the NUL counts")
    nul_id = dict(body, id="req\u0000-7")
    r = d.post("/v2/models/tiny/infer", body=json.dumps(nul_id))
    eq(r.status, 400, "an id with a NUL (it would be echoed cut)")
    check("without NUL" in r.json()["error"], "the error says why: %r" % r.body)
    body["inputs"][0]["datatype"] = "BYTES\u0000x"
    eq(d.post("/v2/models/tiny/infer", body=json.dumps(body)).status, 400, "BYTES\\0x is not BYTES")


@test()
def kserve_v2_classification(d):
    expect(d.get("/v2/health/live"), 200, '{"live":true}')
    expect(d.get("/v2/health/ready"), 200, '{"ready":true}')
    meta = d.get("/v2/models/tiny").json()
    eq(meta["name"], "tiny", "name")
    eq([t["name"] for t in meta["outputs"]], ["label", "score", "logits"], "outputs")
    expect(d.get("/v2/models/tiny/ready"), 200, '{"name":"tiny","ready":true}')
    texts = ["a gripping film", "a dull mess"]
    body = {"id": "req-1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}
    r = d.post("/v2/models/tiny/infer", body=json.dumps(body))
    eq(r.status, 200, "status (%r)" % r.body[:200])
    got = r.json()
    eq(got["id"], "req-1", "id echoed")
    outs = {o["name"]: o for o in got["outputs"]}
    for i, t in enumerate(texts):
        want = json.loads(oracle(text=t)[0])[0]
        eq(outs["label"]["data"][i], want["label"], "label of %r" % t)
        check(abs(outs["score"]["data"][i] - want["score"]) < 1e-5, "score of %r" % t)
    eq(outs["logits"]["shape"], [2, 2], "logits shape")
    r = d.post("/v2/models/tiny/infer", body='{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}')
    eq(r.status, 400, "no BYTES input")
    check("error" in r.json(), "the protocol's error shape")
    # The one version the metadata names answers as the unversioned routes.
    eq(meta["versions"], ["1"], "versions")
    eq(d.post("/v2/models/tiny/versions/1/infer", body=json.dumps(body)).json(), got, "versions/1/infer")
    expect(d.get("/v2/models/tiny/versions/1/ready"), 200, '{"name":"tiny","ready":true}')
    eq(d.get("/v2/models/tiny/versions/1").json(), meta, "versions/1 metadata")
    eq(d.get("/v2/models/tiny/versions/2").status, 404, "another version")
    # Every refusal in the protocol's shape: a shape that does not hold the
    # data, an id past 127 bytes, and what the shared parsers refuse.
    bad = [({"name": "text", "shape": [5], "datatype": "BYTES", "data": texts}, None, "shape"),
           ({"name": "text", "shape": [-2], "datatype": "BYTES", "data": texts}, None, "shape"),
           ({"name": "text", "datatype": "BYTES", "data": texts}, None, "shape"),
           ({"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": texts}, "x" * 128, "id"),
           ({"name": "text", "shape": [1], "datatype": "BYTES", "data": ["word " * 600]}, None,
            "must have at most 512 tokens")]
    for tensor, rid, says in bad:
        req = {"inputs": [tensor]}
        if rid:
            req["id"] = rid
        r = d.post("/v2/models/tiny/infer", body=json.dumps(req))
        eq(r.status, 400, "status for %r" % r.body[:100])
        check(list(r.json()) == ["error"] and says in r.json()["error"],
              "{\"error\"} naming %s: %r" % (says, r.body[:200]))
    r = d.post("/v2/models/tiny/infer", body=json.dumps(
        {"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": texts}]}))
    eq(r.status, 200, "a [1, 2] shape holds two texts")
