"""Errors: FastAPI's statuses and bodies for bad paths, methods and bodies;
oversized bodies and headers; awkward text (invalid UTF-8, NUL bytes, very
long inputs)."""

import json
import threading
import time

from harness import (check, connect, eq, expect, oracle, q, request, same_prediction, stream_post,
                     test)

MISSING_TEXT = ('{"detail":[{"type":"missing","loc":["query","text"],"msg":"Field required",'
                '"input":null}]}')
NOT_FOUND = '{"detail":"Not Found"}'
NOT_ALLOWED = '{"detail":"Method Not Allowed"}'
TOO_LARGE = '{"detail":"request body is larger than the limit of 1048576 bytes"}'


def expect_invalid(r, body, type_, loc):
    """A 422 in pydantic's shape with the given type and loc, identical to
    what the CLI answers for the same body."""
    expect(r, 422)
    detail = r.json()["detail"]
    check(isinstance(detail, list) and len(detail) == 1, "one validation error: %r" % detail)
    eq(detail[0]["type"], type_, "detail type")
    eq(detail[0]["loc"][:len(loc)], loc, "detail loc")
    check(isinstance(detail[0]["msg"], str) and detail[0]["msg"], "detail msg")
    want, rc = oracle(body=body.decode("utf-8", "surrogateescape"))
    eq(rc, 1, "oracle exit status")
    eq(r.body, want, "body vs the CLI oracle")


# ---- paths and methods ---------------------------------------------------------------

@test()
def not_found(d):
    for method, path in [("GET", "/"), ("GET", "/nope"), ("POST", "/predictx"),
                         ("POST", "/predict/"), ("POST", "//predict"), ("GET", "/Health"),
                         ("GET", "/models/tiny"), ("POST", "/models//predict"),
                         ("POST", "/models/tiny/predict/extra"), ("GET", "/docs/x"),
                         ("DELETE", "/nope")]:
        r = request(d.port, method, path)
        expect(r, 404, NOT_FOUND)
        eq(r.header("Allow"), None, "Allow header on a 404")


def allow_set(r):
    return {m.strip() for m in (r.header("Allow") or "").split(",")}


@test()
def method_not_allowed(d):
    for method, path, allowed in [("GET", "/predict", {"POST"}), ("PUT", "/predict", {"POST"}),
                                  ("DELETE", "/predict", {"POST"}), ("HEAD", "/predict", {"POST"}),
                                  ("GET", "/models/tiny/predict", {"POST"}),
                                  ("GET", "/models/nope/predict", {"POST"}),
                                  ("GET", "/tokenize", {"POST"}),
                                  ("GET", "/models/demo/tokenize", {"POST"}),
                                  ("POST", "/health", {"GET"}), ("DELETE", "/models", {"GET"}),
                                  ("POST", "/metrics", {"GET"}), ("PUT", "/openapi.json", {"GET"}),
                                  ("POST", "/docs", {"GET"})]:
        r = request(d.port, method, path)
        expect(r, 405, b"" if method == "HEAD" else NOT_ALLOWED)
        got = allow_set(r)
        # FastAPI lists HEAD beside GET; either form is right.
        check(got == allowed or (allowed == {"GET"} and got == {"GET", "HEAD"}),
              "%s %s: Allow %r, want %s" % (method, path, r.header("Allow"), sorted(allowed)))


@test()
def unknown_model(d):
    expect(d.post("/models/nope/predict?text=x"), 404, '{"detail":"Model \'nope\' not found"}')
    expect(d.post("/models/nope/predict", b'{"inputs": "x"}'), 404,
           '{"detail":"Model \'nope\' not found"}')
    expect(d.post("/models/a%22b/predict?text=x"), 404, '{"detail":"Model \'a\\"b\' not found"}')
    expect(d.post("/models/TINY/predict?text=x"), 404, '{"detail":"Model \'TINY\' not found"}')


@test()
def head_health(d):
    r = request(d.port, "HEAD", "/health")
    expect(r, 200, b"")
    eq(r.header("Content-Length"), "15", "Content-Length of HEAD /health (that of the GET)")
    expect(d.get("/health"), 200, '{"status":"ok"}')


# ---- request bodies -------------------------------------------------------------------

@test()
def missing_text(d):
    expect(d.post("/predict"), 422, MISSING_TEXT)
    expect(d.post("/predict", b""), 422, MISSING_TEXT)
    expect(d.post("/predict", b"  \r\n\t"), 422, MISSING_TEXT)
    expect(d.post("/models/demo/predict"), 422, MISSING_TEXT)
    # Query keys are case-sensitive, as in FastAPI.
    expect(d.post("/predict?TEXT=good"), 422, MISSING_TEXT)
    expect(d.post("/predict?texts=good"), 422, MISSING_TEXT)


@test()
def malformed_json(d):
    for body in [b"hello", b"{bad", b'{"text": "unterminated', b"{", b'{"text": "a",}',
                 b"\x00", b'{"text": "a"} trailing']:
        r = d.post("/predict", body)
        expect(r, 422)
        detail = r.json()["detail"]
        eq(detail[0]["type"], "json_invalid", "type for %r" % body)
        eq(detail[0]["loc"][0], "body", "loc[0] for %r" % body)
        check(isinstance(detail[0]["loc"][1], int), "loc[1] is a position: %r" % detail[0]["loc"])
        eq(detail[0]["msg"], "JSON decode error", "msg for %r" % body)
        if b"\x00" not in body:  # argv cannot carry NUL
            eq(r.body, oracle(body=body.decode())[0], "body vs the CLI oracle for %r" % body)


@test()
def wrong_types(d):
    cases = [
        (b'{"inputs": 5}', "string_type", ["body", "inputs"],
         '{"detail":[{"type":"string_type","loc":["body","inputs"],"msg":"Input should be a valid '
         'string or a non-empty list of strings","input":5}]}'),
        (b'{"inputs": []}', "string_type", ["body", "inputs"], None),
        (b'{"inputs": null}', "string_type", ["body", "inputs"], None),
        (b'{"inputs": ["a", 1]}', "string_type", ["body", "inputs"], None),
        (b'{"text": [1]}', "string_type", ["body", "text"],
         '{"detail":[{"type":"string_type","loc":["body","text"],"msg":"Input should be a valid '
         'string","input":[1]}]}'),
        (b'{"text": 1.5}', "string_type", ["body", "text"], None),
        (b'{"inputs": "x", "raw_scores": "yes"}', "bool_type", ["body", "raw_scores"],
         '{"detail":[{"type":"bool_type","loc":["body","raw_scores"],"msg":"Input should be a '
         'valid boolean","input":"yes"}]}'),
        (b'{"inputs": "x", "truncate": 1}', "bool_type", ["body", "truncate"], None),
        (b"{}", "missing", ["body", "inputs"],
         '{"detail":[{"type":"missing","loc":["body","inputs"],"msg":"Field required",'
         '"input":{}}]}'),
        (b"[1,2]", "dict_type", ["body"],
         '{"detail":[{"type":"dict_type","loc":["body"],"msg":"Input should be a valid '
         'dictionary","input":[1,2]}]}'),
    ]
    for body, type_, loc, exact in cases:
        r = d.post("/predict", body)
        expect_invalid(r, body, type_, loc)
        if exact:
            eq(r.body, exact.encode(), "body for %s" % body.decode())


@test()
def wrong_type_json_scalar(d):
    # Valid JSON that is not an object is a type error, as [1,2] is (FastAPI
    # parses it and then rejects the type); it is not a decode error.
    for body, input_json in [(b'"str"', '"str"'), (b"5", "5"), (b"null", "null"),
                             (b"true", "true")]:
        r = d.post("/predict", body)
        expect(r, 422, '{"detail":[{"type":"dict_type","loc":["body"],"msg":"Input should be a '
                       'valid dictionary","input":%s}]}' % input_json)


@test()
def too_many_inputs(d):
    body = json.dumps({"inputs": ["x"] * 33}).encode()
    r = d.post("/predict", body)
    expect(r, 422)
    detail = r.json()["detail"]
    check(isinstance(detail, str) and "33" in detail and "32" in detail,
          "the 422 names 33 texts and the limit 32: %r" % detail)
    eq(r.body, oracle(body=body.decode())[0], "body vs the CLI oracle")
    expect(d.post("/predict", json.dumps({"inputs": ["x"] * 32}).encode()), 200)


@test()
def query_wins_over_body(d):
    good, bad = oracle(text="good")[0], oracle(text="bad")[0]
    check(good != bad, "the oracle tells good from bad")
    expect(d.post("/predict?text=good", b'{"text": "bad"}'), 200, good)
    expect(d.post("/predict?text=good", b'{"inputs": ["bad", "worse"]}'), 200, good)
    expect(d.post("/predict?text=good", b"{not json at all"), 200, good)
    # A repeated key gives its last value, as in FastAPI.
    expect(d.post("/predict?text=bad&text=good"), 200, good)


# ---- awkward text -----------------------------------------------------------------------

@test()
def invalid_utf8_query(d):
    for raw in [b"\xff", b"good \xc3\x28 movie", b"\xed\xa0\x80"]:
        r = d.post("/predict?text=" + "".join("%%%02X" % b for b in raw))
        expect(r, 422)
        check(isinstance(r.json()["detail"], str), "a message detail: %r" % r.body)
        want, rc = oracle(text=raw)
        eq(rc, 1, "oracle exit status")
        eq(r.body, want, "body vs the CLI oracle for %r" % raw)


@test()
def invalid_utf8_json(d):
    for body in [b'{"text": "\xff"}', b'{"inputs": ["ok", "bad \xc3\x28"]}']:
        r = d.post("/predict", body)
        expect(r, 422)
        eq(r.json()["detail"][0]["type"], "json_invalid", "type for %r" % body)


@test()
def nul_in_query(d):
    # BERT's tokenizer drops NUL characters: "good\0movie" reads "goodmovie".
    want = oracle(text="goodmovie")[0]
    expect(d.post("/predict?text=good%00movie"), 200, want)
    expect(d.post("/predict?text=%00"), 200, oracle(text="")[0])


@test()
def nul_in_json(d):
    want = oracle(text="goodmovie")[0]
    expect(d.post("/predict", b'{"text": "good\\u0000movie"}'), 200, want)


WORDS = ["good", "bad", "movie", "film", "plot", "great", "awful", "story"]


def words(n):
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


@test()
def long_input(d):
    text = words(600)
    r = d.post("/tokenize", json.dumps({"inputs": text}).encode())
    expect(r, 200)
    eq(len(r.json()), 602, "tokens of 600 one-piece words, [CLS] and [SEP]")
    # /tokenize answers texts of up to 16 contexts (8,192 tokens here).
    eq(len(d.post("/tokenize", json.dumps({"inputs": words(8190)}).encode()).json()), 8192, "16 contexts")
    expect(d.post("/tokenize", json.dumps({"inputs": words(8191)}).encode()), 422,
           '{"detail":"Input validation error: a text has more than 8192 tokens, the most /tokenize '
           'answers (16 times the model\'s 512)"}')
    for path, body in [("/predict" + q(text), None), ("/predict", {"text": text}),
                       ("/predict", {"inputs": text}), ("/predict", {"inputs": ["a", text]})]:
        raw = json.dumps(body).encode() if body else None
        r = d.post(path, raw)
        expect(r, 422)
        detail = r.json()["detail"]
        check(isinstance(detail, str) and "602" in detail and "512" in detail,
              "the 422 names the count 602 and the limit 512: %r" % detail)
        # Only a JSON body can ask for truncation, so only it is told how.
        eq("truncate" in detail, body is not None, "the 422 hints at truncate: %r" % detail)
    # Truncated, it answers as the first 510 words do.
    first = words(510)
    r = d.post("/predict", json.dumps({"text": text, "truncate": True}).encode())
    expect(r, 200, oracle(text=first)[0])
    r = d.post("/predict", json.dumps({"inputs": text, "truncate": True}).encode())
    expect(r, 200, oracle(body=json.dumps({"inputs": first}))[0])
    r = d.post("/predict", json.dumps({"inputs": text, "truncate": False}).encode())
    expect(r, 422)
    # Past 4x the limit the count is a bound: tokenizing stops there, so a
    # huge text costs the server no more than that.
    r = d.post("/predict", json.dumps({"inputs": words(3000)}).encode())
    expect(r, 422, '{"detail":"Input validation error: `inputs` must have at most 512 tokens. '
                   'Given: more than 2048 (send \\"truncate\\": true to cut it)"}')


# ---- sizes -------------------------------------------------------------------------------

@test()
def body_at_limit(d):
    head = b'{"text": "good"}'
    body = head + b" " * ((1 << 20) - len(head))
    expect(d.post("/predict", body), 200, oracle(text="good")[0])
    r, sent = stream_post(d.port, "/predict", len(body) + 1)
    check(r is not None, "an answer to a body one byte too large")
    expect(r, 413, TOO_LARGE)


# Bodies of 64 KiB and more are parsed on the thread pool, not the loop
# (SRV_PREPARE_MIN_BYTES): the same answers and errors as small ones.
PREPARED = 64 * 1024


@test()
def large_bodies_parsed_off_the_loop(d):
    text = words(13000)
    body = json.dumps({"inputs": text, "truncate": True})
    check(PREPARED <= len(body) < 120000, "a body over the threshold the CLI can take: %d" % len(body))
    expect(d.post("/predict", body.encode()), 200, oracle(body=json.dumps({"inputs": words(510)}))[0])
    for bad in [body[:-1], body.replace('"truncate"', "truncate"), "[" + "1," * 40000 + "1]"]:
        check(len(bad) >= PREPARED, "over the threshold")
        r = d.post("/predict", bad.encode())
        eq(r.body, oracle(body=bad)[0], "body vs the CLI oracle for %r..." % bad[:30])
        eq(r.status, 422, "status")
    expect(d.post("/models/tiny/tokenize", json.dumps({"inputs": "good " * 20000}).encode()), 422)
    # Several at once: one parses while the others wait their turn.
    want = oracle(body=json.dumps({"inputs": words(510)}))[0]
    answers = [None] * 6
    def post(i):
        answers[i] = request(d.port, "POST", "/predict", body.encode(), timeout=30)
    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(answers):
        check(r is not None, "client %d answered" % i)
        expect(r, 200)
        same_prediction(r.body, want, 1e-5, "client %d (perhaps batched)" % i)
    # KServe takes the same parse, with its own error shape.
    for bad, says in [(body[:-1], "request body is not JSON: "),
                      ("[" + "1," * 40000 + "1]", "request body is not a JSON object")]:
        r = d.post("/v2/models/tiny/infer", bad.encode())
        eq(r.status, 400, "KServe status")
        check(list(r.json()) == ["error"] and r.json()["error"].startswith(says),
              "KServe error %r" % r.body[:100])


@test()
def client_gone_while_its_body_is_parsed(d):
    # Clients that hang up right after sending a large body: whether the
    # close lands before, during or after the parse, the daemon stays whole.
    body = json.dumps({"inputs": ["good"] * 100000}).encode()
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    for _ in range(20):
        s = connect(d.port)
        s.sendall(head + body)
        s.close()
    expect(d.get("/health"), 200, '{"status":"ok"}')
    expect(d.post("/predict?text=good"), 200, oracle(text="good")[0])


@test()
def body_100mb(d):
    t0 = time.monotonic()
    r, sent = stream_post(d.port, "/predict", 100 * 1000 * 1000, timeout=20)
    took = time.monotonic() - t0
    check(r is not None, "an answer before the connection closed (sent %d bytes)" % sent)
    expect(r, 413, TOO_LARGE)
    check(sent < 10 * 1000 * 1000, "refused early: %d bytes sent first" % sent)
    check(took < 5, "refused within 5 s, took %.1f s" % took)
    expect(d.get("/health"), 200, '{"status":"ok"}')
    expect(d.post("/predict?text=good"), 200, oracle(text="good")[0])


@test()
def body_chunked(d):
    # Without Content-Length the limit is found mid-body: the rest is read
    # and dropped, then the 413 sent.
    r, sent = stream_post(d.port, "/predict", (1 << 20) + (1 << 19), chunked=True)
    check(r is not None, "an answer (sent %d bytes)" % sent)
    expect(r, 413, TOO_LARGE)
    r, sent = stream_post(d.port, "/predict?text=good", 1000, chunked=True)
    check(r is not None, "an answer to a small chunked body")
    expect(r, 200, oracle(text="good")[0])
    expect(d.get("/health"), 200, '{"status":"ok"}')


@test()
def oversized_headers(d):
    ok = '{"status":"ok"}'
    expect(d.get("/health", headers={"X-Pad": "a" * 15000}), 200, ok)
    # Over --max-header-bytes (16384): predictd's own 431.
    expect(d.get("/health", headers={"X-Pad": "a" * 17000}), 431,
           '{"detail":"request line and headers are larger than the limit of 16384 bytes"}')
    # A long request line: ours, or MHD's 414 when its read buffer fills first.
    r = d.post("/predict" + q("a " * 9000))
    check(r.status in (414, 431), "431 or 414 for an 18 kB request line, got %d" % r.status)
    # Far over: MHD refuses by itself; any 4xx will do.
    for size in (40000, 200000):
        r = d.get("/health", headers={"X-Pad": "a" * size})
        check(400 <= r.status < 500, "a 4xx for %d bytes of headers, got %d" % (size, r.status))
    expect(d.get("/health"), 200, ok)
