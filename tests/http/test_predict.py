"""Answers: the golden outputs through HTTP, byte equality with the CLI
oracle in every request form, the demo model's documented examples, and
/tokenize and /models."""

import json
import re

from harness import (DEMO, DEMO_EXPECTED, GOLDEN, check, close, eq, expect, load_json, oracle, q,
                     test)

TOL = 1e-4  # tests/fixtures/README.md: pipeline scores and logits, abs 1e-4

_golden = load_json(GOLDEN)["cases"]
SHORT = [c for c in _golden if not c.get("pipeline_default", {}).get("error")]
LONG = [c for c in _golden if c.get("pipeline_default", {}).get("error")]


def body_of(obj):
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def check_top(got, case, what):
    """got is the pipeline form [{"label", "score"}] for golden case."""
    want = case["pipeline_output"][0]
    check(isinstance(got, list) and len(got) == 1, "%s: want one prediction, got %r" % (what, got))
    eq(sorted(got[0]), ["label", "score"], "%s: keys" % what)
    eq(got[0]["label"], want["label"], "%s: label" % what)
    close(got[0]["score"], want["score"], TOL, "%s: score" % what)


def check_all(got, case, what, raw=False):
    """got is the TEI form: every label, sorted by score, for golden case."""
    if raw:
        want = {"NEGATIVE": case["logits"][0], "POSITIVE": case["logits"][1]}
    else:
        want = {s["label"]: s["score"] for s in case["scores"]}
    check(isinstance(got, list) and len(got) == len(want), "%s: want %d labels, got %r"
          % (what, len(want), got))
    eq(sorted(p["label"] for p in got), sorted(want), "%s: labels" % what)
    scores = [p["score"] for p in got]
    eq(scores, sorted(scores, reverse=True), "%s: scores sorted descending" % what)
    for p in got:
        eq(sorted(p), ["label", "score"], "%s: keys" % what)
        close(p["score"], want[p["label"]], TOL, "%s: %s" % (what, p["label"]))


# ---- goldens -------------------------------------------------------------------

@test()
def golden_query_text(d):
    for case in SHORT:
        r = d.post("/predict" + q(case["text"]))
        expect(r, 200)
        check_top(r.json(), case, case["id"])


@test()
def golden_json_text(d):
    for case in SHORT:
        r = d.post("/predict", body_of({"text": case["text"]}))
        expect(r, 200)
        check_top(r.json(), case, case["id"])


@test()
def golden_json_inputs(d):
    for case in SHORT:
        r = d.post("/predict", body_of({"inputs": case["text"]}))
        expect(r, 200)
        check_all(r.json(), case, case["id"])


@test()
def golden_json_inputs_list(d):
    r = d.post("/predict", body_of({"inputs": [c["text"] for c in SHORT]}))
    expect(r, 200)
    got = r.json()
    eq(len(got), len(SHORT), "answers")
    for case, one in zip(SHORT, got):
        check_all(one, case, case["id"])


@test()
def golden_raw_scores(d):
    for case in SHORT:
        r = d.post("/predict", body_of({"inputs": case["text"], "raw_scores": True}))
        expect(r, 200)
        check_all(r.json(), case, case["id"], raw=True)


@test()
def golden_named_model(d):
    for case in SHORT[:4]:
        r = d.post("/models/tiny/predict" + q(case["text"]))
        expect(r, 200)
        check_top(r.json(), case, case["id"])
        eq(r.body, d.post("/predict" + q(case["text"])).body, "/models/tiny/predict vs /predict")


@test()
def golden_over_512_refused(d):
    check(LONG, "the goldens have an over-512 case")
    for case in LONG:
        n = case["num_tokens_untruncated"]
        forms = [("/predict" + q(case["text"]), None),
                 ("/predict", body_of({"text": case["text"]})),
                 ("/predict", body_of({"inputs": case["text"]})),
                 ("/predict", body_of({"inputs": [case["text"]]}))]
        for path, body in forms:
            r = d.post(path, body)
            expect(r, 422)
            detail = r.json()["detail"]
            check(isinstance(detail, str) and str(n) in detail and "512" in detail,
                  "the 422 names the count %d and the limit 512: %r" % (n, detail))
            want, rc = oracle(text=case["text"]) if body is None else oracle(body=body.decode())
            eq(rc, 1, "oracle exit status")
            eq(r.body, want, "body vs the CLI oracle")


@test()
def golden_over_512_truncated(d):
    for case in LONG:
        r = d.post("/predict", body_of({"inputs": case["text"], "truncate": True}))
        expect(r, 200)
        check_all(r.json(), case, case["id"] + " truncated")
        r = d.post("/predict", body_of({"inputs": case["text"], "truncate": True,
                                        "raw_scores": True}))
        expect(r, 200)
        check_all(r.json(), case, case["id"] + " truncated raw", raw=True)
        r = d.post("/predict", body_of({"text": case["text"], "truncate": True}))
        expect(r, 200)
        check_top(r.json(), case, case["id"] + " text truncated")


# ---- byte equality with the one-shot CLI ------------------------------------------

ORACLE_TEXTS = ["I absolutely loved this movie, the acting was brilliant!", "",
                "Line one\nLine two\twith tab\r\n", "这部电影非常好看", "quote \" backslash \\ done",
                "Best day ever \U0001F600 #blessed"]


@test()
def oracle_query_form(d):
    for text in ORACLE_TEXTS:
        r = d.post("/predict" + q(text))
        expect(r, 200)
        want, rc = oracle(text=text)
        eq(rc, 0, "oracle exit status")
        eq(r.body, want, "body for %r" % text)


@test()
def oracle_json_forms(d):
    bodies = []
    for text in ORACLE_TEXTS:
        bodies.append({"text": text})
        bodies.append({"inputs": text})
        bodies.append({"inputs": text, "raw_scores": True})
    bodies.append({"inputs": ORACLE_TEXTS})
    bodies.append({"inputs": ORACLE_TEXTS[:2], "raw_scores": True, "truncate": True})
    bodies.append({"inputs": [ORACLE_TEXTS[0]]})
    for obj in bodies:
        body = body_of(obj)
        r = d.post("/predict", body)
        expect(r, 200)
        want, rc = oracle(body=body.decode())
        eq(rc, 0, "oracle exit status")
        eq(r.body, want, "body for %s" % body.decode())


@test()
def oracle_demo_model(d):
    for text in ORACLE_TEXTS[:3]:
        r = d.post("/models/demo/predict" + q(text))
        expect(r, 200)
        eq(r.body, oracle(text=text, model=DEMO)[0], "demo body for %r" % text)
        body = body_of({"inputs": [text, "a waste of time"]})
        r = d.post("/models/demo/predict", body)
        expect(r, 200)
        eq(r.body, oracle(body=body.decode(), model=DEMO)[0], "demo body for %s" % body.decode())


# ---- the demo model's README ----------------------------------------------------

@test()
def demo_readme_curl(d):
    # Exactly the README's curl line, on the named route and the default one
    # of a daemon serving the demo model first.
    r = d.post("/models/demo/predict?text=a%20gripping,%20beautifully%20acted%20film")
    expect(r, 200)
    got = r.json()
    eq(len(got), 1, "predictions")
    eq(got[0]["label"], "POSITIVE", "label")
    eq(round(got[0]["score"], 4), 0.9982, "score to 4 places as in the README")


@test()
def demo_readme_table(d):
    examples = load_json(DEMO_EXPECTED)["sst2-distilbert-small"]["examples"]
    eq(len(examples), 8, "examples in expected.json")
    for ex in examples:
        r = d.post("/models/demo/predict" + q(ex["text"]))
        expect(r, 200)
        got = r.json()[0]
        eq(got["label"], ex["label"], "label of %r" % ex["text"])
        # The README rounds to 4 places: allow the rounding plus the tolerance.
        close(got["score"], ex["score"], 5e-5 + TOL, "score of %r" % ex["text"])
        r = d.post("/models/demo/predict", body_of({"inputs": ex["text"], "raw_scores": True}))
        expect(r, 200)
        logits = {p["label"]: p["score"] for p in r.json()}
        close(logits["NEGATIVE"], ex["logits"][0], TOL, "NEGATIVE logit of %r" % ex["text"])
        close(logits["POSITIVE"], ex["logits"][1], TOL, "POSITIVE logit of %r" % ex["text"])


# ---- /tokenize and /models ---------------------------------------------------------

@test()
def tokenize_golden_ids(d):
    for case in _golden:
        text = case["text"]
        r = d.post("/tokenize", body_of({"inputs": text}))
        expect(r, 200)
        toks = r.json()
        ids = [t["id"] for t in toks]
        if case in LONG:
            eq(len(ids), case["num_tokens_untruncated"], "%s: tokens (untruncated)" % case["id"])
            eq(ids[:511], case["input_ids"][:511], "%s: first ids" % case["id"])
        else:
            eq(ids, case["input_ids"], "%s: ids" % case["id"])
        raw = text.encode("utf-8")
        for t in toks:
            if t["special"]:
                eq((t["start"], t["stop"]), (None, None), "%s: special offsets" % case["id"])
                check(t["text"] in ("[CLS]", "[SEP]"), "special token text %r" % t["text"])
            else:
                eq(t["text"].encode("utf-8"), raw[t["start"]:t["stop"]],
                   "%s: token text is the input's bytes start..stop" % case["id"])


@test()
def tokenize_forms(d):
    r = d.post("/models/demo/tokenize", body_of({"inputs": ["hi there", "a"],
                                                 "add_special_tokens": False}))
    expect(r, 200, '[[{"id":7632,"text":"hi","special":false,"start":0,"stop":2},'
                   '{"id":2045,"text":"there","special":false,"start":3,"stop":8}],'
                   '[{"id":1037,"text":"a","special":false,"start":0,"stop":1}]]')
    r = d.post("/tokenize", body_of({"inputs": "hi"}))
    expect(r, 200, '[{"id":101,"text":"[CLS]","special":true,"start":null,"stop":null},'
                   '{"id":7632,"text":"hi","special":false,"start":0,"stop":2},'
                   '{"id":102,"text":"[SEP]","special":true,"start":null,"stop":null}]')
    expect(d.post("/tokenize", b'{"text": "hi"}'), 422,
           '{"detail":[{"type":"missing","loc":["body","inputs"],"msg":"Field required",'
           '"input":null}]}')
    expect(d.post("/models/nope/tokenize", b'{"inputs": "hi"}'), 404,
           '{"detail":"Model \'nope\' not found"}')


@test()
def models_list(d):
    # Every dtype, F32 included, runs the kernel level the daemon chose at
    # start-up, which /metrics names too (it depends on the CPU).
    level = re.search(r'predictd_build_info\{[^}]*kernel_level="([a-z0-9]+)"', d.metrics())
    check(level is not None, "kernel_level in predictd_build_info")
    one = ('{"name":"%s","default":%s,"loaded":true,"task":"text-classification",'
           '"architecture":"DistilBertForSequenceClassification","dtype":"f32",'
           '"kernels":"' + level.group(1) + '","max_input_tokens":512}')
    expect(d.get("/models"), 200, '{"models":[%s,%s]}' % (one % ("tiny", "true"),
                                                          one % ("demo", "false")))

