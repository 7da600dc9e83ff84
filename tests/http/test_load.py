"""Load: concurrent clients and dynamic batching, a client leaving while its
request is queued, a full queue (429), and SIGTERM with requests in flight."""

import http.client
import json
import socket
import threading
import time

from harness import (HOST, SLOW, TINY, Daemon, check, config, connect, daemon_time, eq, expect,
                     fail, metric, oracle, oracle_many, q, recv_all, request, same_prediction, test,
                     wait_for)


def parallel(fn, n, timeout=30):
    """Runs fn(i) for i in 0..n-1, each on its own thread, released together.
    Returns the results; an exception a thread raised is its result."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        try:
            barrier.wait(timeout=10 * SLOW)
            results[i] = fn(i)
        except Exception as e:  # reported by the caller, per client
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout * SLOW
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            fail("a client thread did not finish within %ds" % (timeout * SLOW))
    return results


# A request batched with others is not computed bit for bit as it is alone
# (the BLAS sums in another order for another matrix shape): answers in a
# batch match the one-shot CLI to this tolerance, not byte for byte.
BATCH_TOL = 1e-5


def check_separated(wants):
    """The oracle answers (pipeline form) differ by far more than BATCH_TOL,
    so a client given another client's answer is caught."""
    top = sorted((json.loads(w)[0]["label"], json.loads(w)[0]["score"]) for w in wants)
    gaps = [b[1] - a[1] for a, b in zip(top, top[1:]) if a[0] == b[0]]
    check(min(gaps, default=1) > 4 * BATCH_TOL,
          "test inputs: two oracle answers only %g apart" % min(gaps))


def expect_answer(r, want, what):
    expect(r, 200)
    same_prediction(r.body, want, BATCH_TOL, what)


def queued(d, n):
    """True once the tiny model's queue holds n requests."""
    return metric(d.metrics(), 'predictd_queue_size{model="tiny"}') == n


# The tests below are about the queue: their daemons never compute inline,
# and (but for the first) hold even a lone request for the batch window.

# ---- a request to an idle model, computed on the loop --------------------------------

# Any cost qualifies (a second; more under valgrind), so the test does not
# depend on the machine's speed.
config("inline", ["--model", "tiny=" + TINY, "--inline-max-us", daemon_time(1000000)])


@test(daemon="inline")
def inline_when_idle(d):
    n = 12
    texts = [review(i) for i in range(n)]
    wants = oracle_many([(t, None) for t in texts])
    for i, t in enumerate(texts):
        expect(d.post("/predict" + q(t)), 200, wants[i])
    m = d.metrics()
    # The first request measures the model's cost on its worker; every later
    # one, sent while the model is idle, is computed on the loop.
    eq(metric(m, 'predictd_inline_requests_total{model="tiny"}'), float(n - 1),
       "requests computed inline")
    eq(metric(m, 'predictd_batch_size_count{model="tiny"}'), float(n), "batches counted")
    eq(metric(m, 'predictd_requests_total{model="tiny",endpoint="/predict",status="200"}'),
       float(n), "requests counted")


# ---- requests one at a time skip the batch window -------------------------------------

# A window longer than the client's timeout: a request held for it fails.
config("adaptive", ["--model", "tiny=" + TINY, "--inline-max-us", "0",
                    "--max-batch-wait-us", daemon_time(2000000), "--max-batch-size", "64"])


@test(daemon="adaptive")
def lone_requests_skip_the_window(d):
    n = 4
    texts = [review(i) for i in range(n)]
    wants = oracle_many([(t, None) for t in texts])
    for i, t in enumerate(texts):
        expect(d.post("/predict" + q(t), timeout=1.5 * SLOW), 200, wants[i])
    m = d.metrics()
    waits = 'predictd_queue_duration_seconds_bucket{model="tiny",le="1"}'
    eq(metric(m, waits), float(n), "requests that waited under a second for their batch")
    eq(metric(m, 'predictd_batch_size_count{model="tiny"}'), float(n), "batches of one")


# ---- 64 concurrent clients ------------------------------------------------------------

config("batching", ["--model", "tiny=" + TINY, "--inline-max-us", "0",
                    "--max-batch-wait-us", "20000", "--adaptive-batch-wait", "false",
                    "--max-batch-size", "64"])

ADJ = ["good", "bad", "dull", "great", "slow", "funny", "sad", "odd"]


def review(i):
    return "review %d: a %s and %s film" % (i, ADJ[i % 8], ADJ[(i // 8) % 8])


@test(daemon="batching")
def concurrent_64_clients(d):
    n = 64
    # Even clients use ?text=, odd ones {"text": T}; each must get its own answer.
    requests = [("/predict" + q(review(i)), None) if i % 2 == 0 else
                ("/predict", json.dumps({"text": review(i)})) for i in range(n)]
    wants = oracle_many([(review(i), None) for i in range(n)])
    check_separated(wants)

    def client(i):
        path, body = requests[i]
        return request(d.port, "POST", path, body=body, timeout=30)

    for i, r in enumerate(parallel(client, n)):
        if isinstance(r, Exception):
            fail("client %d: %s: %s" % (i, type(r).__name__, r))
        expect_answer(r, wants[i], "client %d" % i)
    m = d.metrics()
    total = metric(m, 'predictd_batch_size_sum{model="tiny"}')
    count = metric(m, 'predictd_batch_size_count{model="tiny"}')
    check(total is not None and count, "predictd_batch_size for tiny is in /metrics")
    eq(total, float(n), "sequences counted in predictd_batch_size_sum")
    check(total / count > 1, "batches of more than one: %g sequences in %g batches"
          % (total, count))
    eq(metric(m, 'predictd_requests_total{model="tiny",endpoint="/predict",status="200"}'),
       float(n), "requests counted")
    # Every answer is in, so the queue is empty: the gauge's writes once
    # raced, and an idle queue could show 1.
    eq(metric(m, 'predictd_queue_size{model="tiny"}'), 0.0, "queue size after the load")


# ---- a full batch leaves at once ------------------------------------------------------

# A window (the longest allowed, 10 s) twice the client's timeout: only the
# batch filling up can send these requests on (the worker is woken for that,
# not for every arrival).
config("fills", ["--model", "tiny=" + TINY, "--inline-max-us", "0",
                 "--max-batch-wait-us", "10000000", "--adaptive-batch-wait", "false",
                 "--max-batch-size", "4"])


@test(daemon="fills")
def full_batch_leaves_before_its_window(d):
    n = 4
    texts = [review(i) for i in range(n)]
    wants = oracle_many([(t, None) for t in texts])

    def client(i):
        return request(d.port, "POST", "/predict" + q(texts[i]), timeout=5)

    for i, r in enumerate(parallel(client, n)):
        if isinstance(r, Exception):
            fail("client %d: %s: %s" % (i, type(r).__name__, r))
        expect_answer(r, wants[i], "client %d" % i)
    m = d.metrics()
    eq(metric(m, 'predictd_batch_size_sum{model="tiny"}'), float(n), "sequences in batches")
    eq(metric(m, 'predictd_batch_size_count{model="tiny"}'), 1.0, "one full batch")


# ---- a client leaves while queued ---------------------------------------------------------

config("slow_batch", ["--model", "tiny=" + TINY, "--inline-max-us", "0",
                      "--max-batch-wait-us", daemon_time(1500000), "--adaptive-batch-wait", "false",
                      "--max-batch-size", "64"])


@test(daemon="slow_batch")
def disconnect_while_queued(d):
    s = connect(d.port)
    s.sendall(b"POST /predict?text=nobody%20waits HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Length: 0\r\n\r\n")
    s.close()
    # A request behind it is still answered, and correctly.
    r = d.post("/predict?text=still%20served", timeout=10)
    expect(r, 200, oracle(text="still served")[0])
    cancelled = 'predictd_cancelled_requests_total{model="tiny"}'
    wait_for(cancelled + " = 1", lambda: metric(d.metrics(), cancelled) == 1, 5)
    m = d.metrics()
    eq(metric(m, 'predictd_requests_total{model="tiny",endpoint="/predict",status="499"}'), 1.0,
       "the abandoned request counted as 499")
    eq(metric(m, 'predictd_batch_size_sum{model="tiny"}'), 1.0,
       "only the live request was computed")


@test(daemon="slow_batch")
def half_close_while_queued(d):
    # A client that shuts its sending side while queued counts as gone, as
    # in nginx; it reads the connection's end, never a 499 (a log status).
    status = 'predictd_requests_total{model="tiny",endpoint="/predict",status="499"}'
    before = metric(d.metrics(), status) or 0
    s = connect(d.port)
    s.sendall(b"POST /predict?text=half%20closed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Length: 0\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    got, how = recv_all(s, time.monotonic() + 10 * SLOW)
    s.close()
    eq((got, how), (b"", "eof"), "what the half-closed client reads")
    wait_for(status + " one up", lambda: metric(d.metrics(), status) == before + 1, 5)


# ---- a full queue --------------------------------------------------------------------------

config("queue_of_one", ["--model", "tiny=" + TINY, "--inline-max-us", "0",
                        "--max-batch-wait-us", daemon_time(1000000), "--adaptive-batch-wait", "false",
                        "--max-batch-size", "64", "--max-queue", "1"])


@test(daemon="queue_of_one")
def queue_full_429(d):
    first = {}
    t = threading.Thread(target=lambda: first.setdefault(
        "r", request(d.port, "POST", "/predict?text=first", timeout=10)), daemon=True)
    t.start()
    wait_for("the first request to be queued", lambda: queued(d, 1), 5)
    expect(d.post("/predict?text=second"), 429, '{"detail":"Model is overloaded"}')
    expect(d.post("/predict", b'{"inputs": ["third"]}'), 429, '{"detail":"Model is overloaded"}')
    t.join(10 * SLOW)
    check("r" in first, "the first request was answered")
    expect(first["r"], 200, oracle(text="first")[0])
    m = d.metrics()
    eq(metric(m, 'predictd_rejected_requests_total{model="tiny",reason="queue_full"}'), 2.0,
       "rejections counted")
    eq(metric(m, 'predictd_queue_size{model="tiny"}'), 0.0, "queue empty again")
    # Requests that do not queue are still served meanwhile.
    expect(d.get("/health"), 200, '{"status":"ok"}')


# ---- SIGTERM with requests in flight ----------------------------------------------------

@test(daemon=None)
def sigterm_drains_in_flight():
    n = 32
    # The batch waits long enough for all 32 to queue before it leaves, even
    # under ASan, and for SIGTERM to find them there.
    d = Daemon(["--model", "tiny=" + TINY, "--inline-max-us", "0",
                "--max-batch-wait-us", daemon_time(600000), "--adaptive-batch-wait", "false",
                "--max-batch-size", "64", "--shutdown-timeout", daemon_time(10)],
               label="sigterm").start()
    wants = oracle_many([(review(i), None) for i in range(n)])
    check_separated(wants)
    keep = http.client.HTTPConnection(HOST, d.port, timeout=10 * SLOW)
    keep.request("GET", "/health")
    eq(keep.getresponse().read(), b'{"status":"ok"}', "health on the kept connection")

    results = [None] * n

    def client(i):
        try:
            results[i] = request(d.port, "POST", "/predict" + q(review(i)), timeout=30)
        except Exception as e:  # reported below, per client
            results[i] = e

    threads = [threading.Thread(target=lambda i=i: client(i), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    wait_for("%d requests queued" % n, lambda: queued(d, n), 10)
    t0 = time.monotonic()
    d.terminate()
    wait_for("the daemon to take SIGTERM", lambda: "Terminated" in d.stderr(), 5)
    # A connection opened before SIGTERM is still served, and told the daemon stops.
    keep.request("GET", "/health")
    r = keep.getresponse()
    eq((r.status, r.read()), (503, b'{"status":"stopping"}'), "health while stopping")
    keep.close()
    for t in threads:
        t.join(15 * SLOW)
    code = d.wait(10)
    took = time.monotonic() - t0
    check(code is not None, "exited within the shutdown timeout")
    eq(code, 0, "exit code")
    d.check_clean()
    check(took < 5 * SLOW, "drained in %.1fs" % took)
    for i, r in enumerate(results):
        check(r is not None, "client %d got an answer" % i)
        if isinstance(r, Exception):
            fail("client %d: %s: %s" % (i, type(r).__name__, r))
        expect_answer(r, wants[i], "client %d" % i)
    try:
        s = connect(d.port, timeout=2)
        s.close()
        fail("a connection after shutdown succeeded")
    except OSError:
        pass


@test(daemon=None)
def queued_at_shutdown_deadline_503():
    # A request still queued when the shutdown deadline passes is answered
    # 503 (it was once answered 200 with a made-up prediction).
    d = Daemon(["--model", "tiny=" + TINY, "--inline-max-us", "0", "--adaptive-batch-wait", "false",
                "--max-batch-wait-us", daemon_time(5000000), "--shutdown-timeout", "0"],
               label="deadline").start()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", request(d.port, "POST", "/predict?text=hello", timeout=30)), daemon=True)
    t.start()
    wait_for("the request queued", lambda: queued(d, 1), 10)
    d.terminate()
    t.join(30 * SLOW)
    eq(d.wait(30), 0, "exit code")
    d.check_clean()
    check("r" in result, "the queued client got an answer")
    expect(result["r"], 503, '{"detail":"Service is shutting down"}')


def post_then_sigterm(args, body):
    """Starts a daemon with args, POSTs body to /predict and sends SIGTERM as
    soon as the daemon says its parse on the pool has begun; returns
    (status, body) of the answer, or None if the connection closed first."""
    d = Daemon(["--model", "tiny=" + TINY, "--max-body-bytes", "16777216", "--log-level", "debug"]
               + args, label="parse_stop").start()
    conn = http.client.HTTPConnection(HOST, d.port, timeout=30 * SLOW)
    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
    wait_for("the parse on the pool", lambda: "body on the thread pool" in d.stderr(), 10)
    d.terminate()
    try:
        r = conn.getresponse()
        answer = (r.status, r.read())
    except (http.client.HTTPException, OSError):
        answer = None
    eq(d.wait(30), 0, "exit code")
    d.check_clean()
    return answer


# 3 M short strings: a 15 MB body whose parse takes a good part of a second.
MANY_INPUTS = json.dumps({"inputs": ["a"] * 3000000}).encode()
TOO_MANY_INPUTS = (b'{"detail":"Input validation error: `inputs` holds 3000000 items, at most 32 are '
                   b'allowed in one request"}')


@test(daemon=None)
def body_being_parsed_at_shutdown():
    # A request whose body was in before SIGTERM is answered, parsed on the
    # pool or not (it once got a 503 because its parse ended after SIGTERM).
    eq(post_then_sigterm([], MANY_INPUTS), (422, TOO_MANY_INPUTS), "the request's own answer")


@test(daemon=None)
def body_being_parsed_at_shutdown_deadline():
    # With no time left the daemon stops cleanly all the same (the parse
    # finishes alone, its memory freed): the request's own 422, or a 503.
    answer = post_then_sigterm(["--shutdown-timeout", "0"], MANY_INPUTS)
    check(answer in (None, (422, TOO_MANY_INPUTS), (503, b'{"detail":"Service is shutting down"}')),
          "the request's 422 or a 503: %r" % (answer,))


# ---- a client leaves while its batch runs ---------------------------------------------------

config("long_batch", ["--model", "tiny=" + TINY, "--inline-max-us", "0",
                      "--max-batch-wait-us", daemon_time(300000), "--adaptive-batch-wait", "false",
                      "--max-batch-size", "64", "--max-batch-tokens", "65536"])

LONG = " ".join(ADJ[i % 8] for i in range(600))


@test(daemon="long_batch")
def disconnect_during_forward(d):
    # Client A's 32 long inputs and client B's one text run in one batch; A
    # leaves while the batch computes. B must still get its own rows.
    b_text = "a dull, lifeless and utterly predictable mess"
    want = oracle(text=b_text)[0]
    body = json.dumps({"inputs": [LONG] * 32, "truncate": True}).encode()
    a = connect(d.port)
    a.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    wait_for("A queued", lambda: queued(d, 1), 5)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault(
        "r", request(d.port, "POST", "/predict" + q(b_text), timeout=20)), daemon=True)
    t.start()
    wait_for("A and B queued", lambda: queued(d, 2), 5)
    wait_for("the batch to start", lambda: queued(d, 0), 5)
    a.close()
    t.join(20 * SLOW)
    check("r" in got, "B was answered")
    expect_answer(got["r"], want, "B")
    cancelled = 'predictd_cancelled_requests_total{model="tiny"}'
    wait_for(cancelled + " = 1", lambda: metric(d.metrics(), cancelled) == 1, 5)
