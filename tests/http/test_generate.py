"""Generation through HTTP: the GPT-2 goldens in the pipeline, TGI and OpenAI
forms, streams equal to whole answers, sixteen concurrent generations equal
to their solo runs, cancelled streams freeing their KV cache, and parameter
validation."""

import json
import os
import socket
import struct
import threading
import time

from harness import (REPO, SLOW, Daemon, check, close, config, connect, eq, expect, fail,
                     load_json, metric, test, wait_for)

GPT2 = os.path.join(REPO, "tests", "fixtures", "gpt2-tiny")
GOLDEN = load_json(os.path.join(REPO, "tests", "fixtures", "golden", "gpt2.json"))

config("gpt2", ["--model", "gpt2=" + GPT2, "--max-batch-total-tokens", "60000"])
# The access log slows the loop thread, which widens the races a test aims at.
config("gpt2_logged", ["--model", "gpt2=" + GPT2, "--access-log", "true"])


def post_json(d, path, obj, **kw):
    return d.post(path, body=json.dumps(obj, ensure_ascii=False).encode("utf-8"), **kw)


def events(body):
    """The JSON payloads of a server-sent event stream."""
    out = []
    for line in body.decode("utf-8").split("\n"):
        if line.startswith("data:"):
            out.append(line[5:].strip())
    return out


@test(daemon="gpt2")
def generate_golden_greedy_pipeline(d):
    for case in GOLDEN["greedy"]:
        r = post_json(d, "/predict", {"inputs": case["prompt"],
                                      "parameters": {"do_sample": False, "max_new_tokens": 20}})
        eq(r.status, 200, "status")
        eq(r.json(), [{"generated_text": case["full_text_hf_clean_up"]}], "pipeline answer for %r"
           % case["prompt"])


@test(daemon="gpt2")
def generate_golden_greedy_tgi_details(d):
    for case in GOLDEN["greedy"]:
        r = post_json(d, "/generate", {"inputs": case["prompt"],
                                       "parameters": {"max_new_tokens": 20, "details": True}})
        eq(r.status, 200, "status")
        got = r.json()
        eq([t["id"] for t in got["details"]["tokens"]], case["generated_ids"], "generated ids")
        eq(got["generated_text"], case["generated_text"], "generated_text")
        eq(got["details"]["finish_reason"], "length", "finish_reason")
        eq(got["details"]["generated_tokens"], 20, "generated_tokens")
        for t in got["details"]["tokens"]:
            check(t["logprob"] <= 0, "log-probabilities are <= 0: %r" % t)


@test(daemon="gpt2")
def generate_golden_beam_search(d):
    for case in GOLDEN["beam"]:
        r = post_json(d, "/generate", {"inputs": case["prompt"], "parameters": {
            "num_beams": case["num_beams"], "length_penalty": case["length_penalty"],
            "early_stopping": case["early_stopping"], "max_new_tokens": case["max_new_tokens"]}})
        eq(r.status, 200, "status")
        eq(r.json()["generated_text"], case["generated_text"], "beam text for %r" % case["prompt"])


@test(daemon="gpt2")
def generate_stream_equals_whole(d):
    params = {"max_new_tokens": 24, "do_sample": True, "seed": 11, "top_k": 20}
    whole = post_json(d, "/generate", {"inputs": "Unicode: café 日本語 🙂", "parameters": params}).json()
    r = post_json(d, "/generate_stream", {"inputs": "Unicode: café 日本語 🙂", "parameters": params})
    eq(r.status, 200, "status")
    eq(r.header("Content-Type"), "text/event-stream", "Content-Type")
    evs = [json.loads(e) for e in events(r.body)]
    eq(len(evs), 24, "one event per token")
    eq("".join(e["token"]["text"] for e in evs if not e["token"]["special"]),
       whole["generated_text"], "concatenated token texts")
    eq(evs[-1]["generated_text"], whole["generated_text"], "the last event's generated_text")
    check(all(e["generated_text"] is None for e in evs[:-1]), "only the last event is final")


@test(daemon="gpt2")
def generate_openai_completions(d):
    r = post_json(d, "/v1/completions", {"model": "gpt2", "prompt": "The", "max_tokens": 5,
                                          "temperature": 0})
    eq(r.status, 200, "status")
    got = r.json()
    eq(got["object"], "text_completion", "object")
    eq(got["usage"], {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}, "usage")
    greedy = [c for c in GOLDEN["greedy"] if c["prompt"] == "The"][0]
    check(greedy["generated_text"].startswith(got["choices"][0]["text"]),
          "temperature 0 is greedy: %r" % got["choices"][0]["text"])
    r = post_json(d, "/v1/completions", {"prompt": "The", "max_tokens": 5, "temperature": 0,
                                          "stream": True})
    evs = events(r.body)
    eq(evs[-1], "[DONE]", "the stream ends with [DONE]")
    text = "".join(json.loads(e)["choices"][0]["text"] for e in evs[:-1])
    eq(text, got["choices"][0]["text"], "streamed text")
    # "echo" puts the prompt first, streamed or not.
    echo = {"prompt": "The", "max_tokens": 5, "temperature": 0, "echo": True}
    whole = post_json(d, "/v1/completions", echo).json()["choices"][0]["text"]
    eq(whole, "The" + got["choices"][0]["text"], "echoed answer")
    evs = events(post_json(d, "/v1/completions", dict(echo, stream=True)).body)
    eq("".join(json.loads(e)["choices"][0]["text"] for e in evs[:-1]), whole, "echoed stream")
    expect(post_json(d, "/v1/completions", {"model": "nope", "prompt": "x"}), 404,
           '{"detail":"Model \'nope\' not found"}')
    # Its 422s name its own fields.
    expect(post_json(d, "/v1/completions", {"prompt": "The", "max_tokens": 2000}), 422,
           '{"detail":"Input validation error: `max_tokens` must be <= 1024. Given: 2000"}')
    r = post_json(d, "/v1/completions", {"prompt": "The " * 600, "max_tokens": 1000})
    eq(r.status, 422, "prompt + max_tokens past the context")
    check("`prompt` tokens + `max_tokens`" in r.json()["detail"], "named fields: %r" % r.body)


def solo(d, prompt, n):
    r = post_json(d, "/generate", {"inputs": prompt, "parameters": {"max_new_tokens": n,
                                                                    "details": True}})
    eq(r.status, 200, "status")
    return [t["id"] for t in r.json()["details"]["tokens"]]


@test(daemon="gpt2")
def generate_16_concurrent_equal_solo(d):
    prompts = ["Hello, my dog is cute", "The", "Once upon a time", "Numbers 1 2 3"]
    jobs = [(prompts[i % 4], 4 + (i * 7) % 29) for i in range(16)]
    want = [solo(d, p, n) for p, n in jobs]
    got = [None] * 16

    def run(i):
        got[i] = solo(d, *jobs[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * SLOW)
    for i in range(16):
        eq(got[i], want[i], "generation %d beside 15 others" % i)


@test(daemon="gpt2")
def generate_cancelled_stream_frees_its_cache(d):
    s = connect(d.port)
    body = json.dumps({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 900}}).encode()
    s.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    s.settimeout(10 * SLOW)
    got = b""
    while b"data:" not in got:
        chunk = s.recv(4096)
        if not chunk:
            fail("the stream ended before its first event: %r" % got)
        got += chunk
    series = 'predictd_kv_cache_tokens{model="gpt2"}'
    wait_for("a running sequence", lambda: (metric(d.metrics(), series) or 0) > 0, 5)
    s.close()
    wait_for(series + " back to 0", lambda: metric(d.metrics(), series) == 0, 10)
    wait_for("the cancellation counted",
             lambda: (metric(d.metrics(), 'predictd_cancelled_requests_total{model="gpt2"}') or 0) >= 1, 5)


def reset_streams(port, count, seen):
    """Opens short streams and resets each 0-7 ms after sending it: some
    before their job is queued, some mid-stream, some as their last event
    is written."""
    body = json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 2}}).encode()
    req = (b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
           % (len(body), body))
    for i in range(count):
        s = connect(port)
        s.sendall(req)
        time.sleep(0.001 * (i % 8))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        seen[0] += 1


@test(daemon="gpt2_logged")
def generate_streams_reset_by_clients(d):
    # A stream whose client vanished as its last tokens were written once
    # freed the connection under the code ending the stream (ASan: use after
    # free). The daemon must come through alive with every sequence freed.
    seen = [0]
    threads = [threading.Thread(target=reset_streams, args=(d.port, 1000, seen)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120 * SLOW)
    eq(seen[0], 8 * 1000, "connections made")
    check(d.alive(), "the daemon survives")
    wait_for("every sequence freed",
             lambda: metric(d.metrics(), 'predictd_kv_cache_tokens{model="gpt2"}') == 0, 10)
    r = post_json(d, "/generate_stream", {"inputs": "hi", "parameters": {"max_new_tokens": 2}})
    eq(r.status, 200, "a stream after the resets")
    eq(len(events(r.body)), 2, "its events")


@test(daemon="gpt2")
def generate_rejects_bad_parameters(d):
    cases = [({"top_p": 1.5, "do_sample": True}, "top_p"),
             ({"temperature": 0, "do_sample": True}, "temperature"),
             ({"max_new_tokens": -3}, "max_new_tokens"),
             ({"max_new_tokens": 0}, "max_new_tokens"),
             ({"max_new_tokens": -1}, "max_new_tokens"),
             ({"num_beams": 3, "do_sample": True}, "num_beams"),
             ({"max_new_tokens": 1030}, "max_new_tokens"),
             ({"max_new_tokens": 1023}, "max_new_tokens"),
             ({"top_k": "x"}, "top_k"),
             # 0 and a denormal in float32: the scaled logits were inf or NaN
             # and sampling drew garbage.
             ({"temperature": 1e-300, "do_sample": True}, "temperature"),
             ({"temperature": 1e-40, "do_sample": True}, "temperature"),
             ({"repetition_penalty": 1e-45}, "repetition_penalty"),
             ({"repetition_penalty": 3e38}, "repetition_penalty"),
             ({"seed": -5, "do_sample": True}, "seed"),
             ({"num_beams": 0}, "num_beams")]  # once divided by: SIGFPE
    for params, field in cases:
        r = post_json(d, "/generate", {"inputs": "Hello there", "parameters": params})
        eq(r.status, 422, "status for %r" % params)
        check(field in r.body.decode(), "the error names %s: %r" % (field, r.body))
    for body, field in [({"prompt": "Hi", "temperature": 1e-300}, "temperature"),
                        ({"prompt": "Hi", "max_tokens": -1}, "max_tokens")]:
        r = post_json(d, "/v1/completions", body)
        eq(r.status, 422, "status for %r" % body)
        check(field in r.body.decode(), "the error names %s: %r" % (field, r.body))
    expect(post_json(d, "/generate", {"inputs": ""}), 422,
           '{"detail":"Input validation error: `inputs` cannot be empty"}')
    eq(post_json(d, "/v1/completions", {"prompt": "", "max_tokens": 2}).status, 200,
       "OpenAI generates from an empty prompt")
    # A name with a NUL is not the name before it.
    eq(post_json(d, "/v1/completions", {"model": "gpt2\u0000x", "prompt": "Hi"}).status, 404,
       "a model name with a NUL")
    r = post_json(d, "/generate", {"inputs": "x " * 1100, "parameters": {"max_new_tokens": 10}})
    eq(r.status, 422, "a prompt over the context")


@test(daemon="gpt2")
def generate_sampling_and_stops(d):
    # Each prompt of a list samples on its own (they all drew the same
    # sample); the first keeps the seed's single-prompt answer.
    params = {"do_sample": True, "seed": 3, "max_new_tokens": 12}
    texts = [a["generated_text"] for a in post_json(
        d, "/predict", {"inputs": ["The"] * 4, "parameters": params}).json()]
    check(len(set(texts)) > 1, "four samples of one prompt differ: %r" % texts)
    alone = post_json(d, "/predict", {"inputs": "The", "parameters": params}).json()
    eq(texts[0], alone[0]["generated_text"], "the first prompt's sample is the seed's")
    # A request with no parameters samples as the model's config says, from
    # a fresh seed each time (it always drew seed 0's text).
    texts = [post_json(d, "/predict", {"inputs": "The"}).json()[0]["generated_text"]
             for _ in range(3)]
    check(len(set(texts)) > 1, "three unseeded samples differ: %r" % texts)
    # TGI samples when a warper is set, do_sample or not.
    warm = {"temperature": 0.7, "seed": 5, "max_new_tokens": 12}
    eq(post_json(d, "/generate", {"inputs": "The", "parameters": warm}).json(),
       post_json(d, "/generate", {"inputs": "The", "parameters": dict(warm, do_sample=True)}).json(),
       "temperature alone samples, as TGI does")
    # The earliest stop cuts, whatever the list's order: " orchestra" holds
    # "c" before "h".
    for stop in (["h", "c"], ["c", "h"]):
        expect(post_json(d, "/generate", {"inputs": "Hello", "parameters": {
            "max_new_tokens": 5, "stop": stop}}), 200, '{"generated_text":" or"}')


@test(daemon="gpt2")
def generate_running_sequences_counts_beams(d):
    # The gauge counted jobs: two prompts of two beams each are four.
    s = connect(d.port)
    body = json.dumps({"inputs": ["Once upon a time", "Hello"], "parameters": {
        "max_new_tokens": 900, "num_beams": 2, "do_sample": False}}).encode()
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    series = 'predictd_running_sequences{model="gpt2"}'
    wait_for("four running sequences", lambda: metric(d.metrics(), series) == 4, 10)
    s.close()
    wait_for(series + " back to 0", lambda: metric(d.metrics(), series) == 0, 10)


@test(daemon="gpt2")
def kserve_v2_generation_parameters(d):
    def infer(params, prompt="Hello"):
        body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES",
                            "data": [prompt]}]}
        if params is not None:
            body["parameters"] = params
        return post_json(d, "/v2/models/gpt2/infer", body)
    r = infer("abc")
    eq(r.status, 400, "parameters that are not an object")
    check("error" in r.json(), "in the protocol's shape: %r" % r.body)
    want = post_json(d, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    got = infer({"max_tokens": 3, "max_new_tokens": None})
    eq(got.status, 200, "max_tokens beside a null max_new_tokens")
    eq(got.json()["outputs"][0]["data"], [want.json()["generated_text"]], "three tokens")
    # A NUL inside the prompt is part of it, as /generate takes it.
    prompt = "Hello\u0000 world"
    want = post_json(d, "/generate", {"inputs": prompt, "parameters": {"max_new_tokens": 3}})
    cut = post_json(d, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    check(want.json() != cut.json(), "the NUL and what follows change the answer")
    eq(infer({"max_new_tokens": 3}, prompt).json()["outputs"][0]["data"],
       [want.json()["generated_text"]], "the whole prompt")


config("gpt2_kv_9000", ["--model", "gpt2=" + GPT2, "--max-batch-total-tokens", "9000"])


@test(daemon="gpt2_kv_9000")
def queued_generation_cancelled_behind_a_waiting_head(d):
    # A beam search holds 8,008 of the 9,000 KV tokens; B (1,001) waits at
    # the head of the queue for room, C waits behind B. C's client leaves:
    # C must give its queue slot back while B still waits, not when B is
    # admitted (it used to count in predictd_queue_size and --max-queue).
    def send(body):
        s = connect(d.port)
        raw = json.dumps(body).encode()
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
        return s
    running = 'predictd_running_sequences{model="gpt2"}'
    queued = 'predictd_queue_size{model="gpt2"}'
    a = send({"inputs": "Hello", "parameters": {"max_new_tokens": 1000, "num_beams": 8}})
    wait_for("the beam search running", lambda: metric(d.metrics(), running) == 8, 10)
    b = send({"inputs": "Hello", "parameters": {"max_new_tokens": 1000}})
    c = send({"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
    wait_for("two waiting", lambda: metric(d.metrics(), queued) == 2, 10)
    c.close()
    wait_for("the departed one dropped", lambda: metric(d.metrics(), queued) == 1, 10)
    eq(metric(d.metrics(), running), 8.0, "the beam search still running meanwhile")
    a.close()
    b.close()
    wait_for("all gone", lambda: metric(d.metrics(), running) == 0 and
             metric(d.metrics(), queued) == 0, 20)


config("gpt2_limited", ["--model", "gpt2=" + GPT2, "--max-new-tokens-limit", "10",
                        "--max-batch-total-tokens", "40"])


@test(daemon="gpt2_limited")
def generate_defaults_within_limits(d):
    # Defaults the client never set (TGI's 100 new tokens, OpenAI's 16) were
    # refused as if asked for; they are capped to the server's limits.
    r = post_json(d, "/generate", {"inputs": "Hello", "parameters": {"details": True}})
    eq(r.status, 200, "TGI's default over --max-new-tokens-limit (%r)" % r.body[:200])
    eq(r.json()["details"]["generated_tokens"], 10, "capped at the limit")
    r = post_json(d, "/v1/completions", {"prompt": " a" * 35})  # 35 tokens
    eq(r.status, 200, "OpenAI's default over the KV budget (%r)" % r.body[:200])
    eq(r.json()["usage"]["completion_tokens"], 5, "capped at the 40-token budget")
    r = post_json(d, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 11}})
    eq(r.status, 422, "asked for, over the limit")
    # A list's prompts share the budget: two 15-token prompts get 5 new
    # tokens each (10 each once overran the 40-token budget together).
    r = post_json(d, "/predict", {"inputs": [" a" * 15] * 2, "parameters": {"do_sample": False}})
    eq(r.status, 200, "two prompts' defaults in the 40-token budget (%r)" % r.body[:200])


config("gpt2_small_kv", ["--model", "gpt2=" + GPT2, "--max-batch-total-tokens", "64"])


@test(daemon="gpt2_small_kv")
def generate_kv_budget_bounds_requests(d):
    r = post_json(d, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 100}})
    eq(r.status, 422, "a request needing more KV cache than the budget")
    check("max-batch-total-tokens" in r.body.decode(), "the error names the option: %r" % r.body)
    r = post_json(d, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 20}})
    eq(r.status, 200, "a request within the budget")


config("gpt2_small_steps", ["--model", "gpt2=" + GPT2, "--max-batch-size", "4",
                            "--max-batch-tokens", "8"])


@test(daemon="gpt2_small_steps")
def generate_step_limits_bound_requests(d):
    # A request the step can never hold once waited at the head of the queue
    # forever, blocking every generation behind it; a prompt longer than a
    # step overran the step buffers.
    cases = [("/generate", {"inputs": "one two three four five six seven eight nine ten",
                            "parameters": {"max_new_tokens": 2}}, "--max-batch-tokens"),
             ("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 2, "num_beams": 5}},
              "--max-batch-size"),
             ("/predict", {"inputs": ["a", "b", "c", "d", "e"], "parameters": {"max_new_tokens": 2}},
              "--max-batch-size"),
             ("/predict", {"inputs": ["a", "b", "c"],
                           "parameters": {"max_new_tokens": 2, "num_beams": 2, "do_sample": False}},
              "--max-batch-size")]
    for path, body, option in cases:
        r = post_json(d, path, body)
        eq(r.status, 422, "status for %r" % body)
        check(option in r.body.decode(), "the error names %s: %r" % (option, r.body))
    r = post_json(d, "/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 2, "num_beams": 4}})
    eq(r.status, 200, "a beam search that fits the step")
    r = post_json(d, "/predict", {"inputs": ["a", "b", "c", "d"], "parameters": {"max_new_tokens": 2}})
    eq(r.status, 200, "four prompts in a four-row step")
    eq(len(r.json()), 4, "four answers")


SHAKESPEARE = os.path.join(REPO, "models", "demo", "shakespeare-gpt2-small")
config("tight_step", ["--model", "gpt2=" + SHAKESPEARE, "--max-batch-tokens", "70",
                      "--threads", "1"])


@test(daemon="tight_step")
def long_prefill_not_starved(d):
    # A prompt as long as the step's token budget waited for as long as other
    # sequences kept decoding (their rows came first in the step): five such
    # prompts, one after another, must all be served while six clients keep
    # generating.
    stop = threading.Event()
    errors = []

    def churn():
        while not stop.is_set():
            try:
                post_json(d, "/generate", {"inputs": "ROMEO:", "parameters": {
                    "max_new_tokens": 250, "do_sample": False}}, timeout=120)
            except Exception as e:  # reported below
                errors.append(e)
                return
    threads = [threading.Thread(target=churn, daemon=True) for _ in range(6)]
    for t in threads:  # staggered, so that their generations never end together
        t.start()
        time.sleep(0.15)
    try:
        series = 'predictd_running_sequences{model="gpt2"}'
        wait_for("the load running", lambda: (metric(d.metrics(), series) or 0) >= 5, 20)
        for i in range(5):
            r = post_json(d, "/generate", {"inputs": " a" * 70, "parameters": {"max_new_tokens": 1}},
                          timeout=20)
            eq(r.status, 200, "70-token prompt %d under load (%r)" % (i, r.body[:200]))
        check(not stop.is_set() and not errors, "the load ran throughout")
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    check(not errors, "load clients: %r" % errors[:1])


config("gpt2_short", ["--model", "gpt2=" + GPT2, "--max-input-tokens", "4"])


@test(daemon="gpt2_short")
def generate_max_input_tokens(d):
    # --max-input-tokens bounds prompts as it bounds classification inputs.
    prompt = "one two three four five six"
    for path, body, field in [("/generate", {"inputs": prompt}, "inputs"),
                              ("/predict", {"inputs": prompt}, "inputs"),
                              ("/v1/completions", {"prompt": prompt}, "prompt")]:
        r = post_json(d, path, body)
        eq(r.status, 422, "%s with a 6-token prompt" % path)
        eq(r.json()["detail"], "Input validation error: `%s` must have at most 4 tokens. Given: 6"
           % field, "%s's 422" % path)
    eq(post_json(d, "/generate", {"inputs": "one two three four",
                                  "parameters": {"max_new_tokens": 2}}).status, 200, "4 tokens")
    eq(d.get("/models").json()["models"][0]["max_input_tokens"], 4, "/models")


@test(daemon=None)
def generate_cut_at_shutdown_deadline():
    # With no time left (--shutdown-timeout 0), running and queued generations
    # end at once: a 503, or in a stream already answered 200 an error event
    # and the stream's proper end. Never a bare close (answers resumed at the
    # stop were once dropped) nor a wait for the generations to finish.
    d = Daemon(["--model", "gpt2=" + GPT2, "--shutdown-timeout", "0"], label="gpt2_stop").start()
    results = [None] * 5
    params = {"inputs": "Hello", "parameters": {"max_new_tokens": 1000}}
    openai = {"prompt": "Hello", "max_tokens": 1000, "stream": True}

    def client(i):
        try:
            if i == 1:
                results[i] = post_json(d, "/v1/completions", openai, timeout=60)
            else:
                results[i] = post_json(d, "/generate_stream" if i == 0 else "/generate", params,
                                       timeout=60)
        except Exception as e:  # reported below, per client
            results[i] = e
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(5)]
    for t in threads:
        t.start()
    # All five running (each needs 1,001 of the 16,384 KV tokens) before the
    # stop: a request still on its way would find the port closed.
    series = 'predictd_running_sequences{model="gpt2"}'
    wait_for("the generations running", lambda: metric(d.metrics(), series) == 5, 10)
    d.terminate()
    for t in threads:
        t.join(30 * SLOW)
    eq(d.wait(30), 0, "exit code")
    d.check_clean()
    for i, r in enumerate(results):
        check(not isinstance(r, Exception) and r is not None, "client %d: %r" % (i, r))
    stream = results[0]
    eq(stream.status, 200, "the stream's status")
    evs = events(stream.body)
    eq(json.loads(evs[-1]), {"error": "Service is shutting down", "error_type": "shutdown"},
       "the stream's last event")
    # An OpenAI stream ends in its own error shape, then [DONE].
    eq(results[1].status, 200, "the OpenAI stream's status")
    evs = events(results[1].body)
    eq(evs[-2:], ['{"error":{"message":"Service is shutting down","type":"shutdown"}}', "[DONE]"],
       "the OpenAI stream's last events")
    for i, r in enumerate(results[2:], 2):
        expect(r, 503, '{"detail":"Service is shutting down"}')
