"""Soak: mixed traffic at many connections for a while, against the real
daemon serving all three model families.

  python3 tests/soak/soak.py BINARY SECONDS [CONNECTIONS]

Every client loops over a mix of requests (classification in both forms,
generation whole and streamed, streams cut off mid-way, CLIP uploads, and
malformed or oversized requests). It fails on any 5xx, any wrong answer
(the answers to fixed requests are learned once, alone, and must never
change), a daemon crash or sanitizer report, or resident memory that keeps
growing after warm-up. It prints the memory curve and request counts, and
closes with `N passed, N failed`. Loopback only; bounded by SECONDS.
"""

import base64
import http.client
import json
import os
import random
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "http"))
import harness  # noqa: E402
from harness import REPO, Daemon, TestFailure, same_prediction  # noqa: E402

FIX = os.path.join(REPO, "tests", "fixtures")
IMAGE = os.path.join(FIX, "golden", "images", "checker_300x500.png")

with open(IMAGE, "rb") as f:
    IMAGE_B64 = base64.b64encode(f.read()).decode()

# name -> (method, path, body, allowed statuses, checked): checked requests
# must always get the answer they got alone.
REQUESTS = {
    "classify_query": ("POST", "/models/sst2/predict?text=a%20gripping%20film", None, {200}, True),
    "classify_tei": ("POST", "/models/sst2/predict", {"inputs": ["good", "bad", "fine"]}, {200}, True),
    "generate": ("POST", "/models/gpt2/generate",
                 {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 12}}, {200}, True),
    "generate_seeded": ("POST", "/models/gpt2/generate",
                        {"inputs": "The", "parameters": {"max_new_tokens": 8, "do_sample": True,
                                                         "seed": 5}}, {200}, True),
    "stream": ("POST", "/models/gpt2/generate_stream",
               {"inputs": "Hello", "parameters": {"max_new_tokens": 10}}, {200}, True),
    "clip": ("POST", "/models/clip/predict",
             {"inputs": IMAGE_B64, "parameters": {"candidate_labels": ["cat", "checkerboard"]}}, {200}, True),
    "bad_json": ("POST", "/models/sst2/predict", b"{\"inputs\": [", {422}, False),
    "bad_image": ("POST", "/models/clip/predict",
                  {"inputs": "aGVsbG8=", "parameters": {"candidate_labels": ["a"]}}, {422}, False),
    "bad_param": ("POST", "/models/gpt2/generate",
                  {"inputs": "x", "parameters": {"top_p": 7, "do_sample": True}}, {422}, False),
    "not_found": ("GET", "/nowhere", None, {404}, False),
    "too_long": ("POST", "/models/sst2/predict", {"inputs": "word " * 700}, {422}, False),
}
# Overload answers 429 (or 503 while stopping); nothing else may differ.
OVERLOAD = {429}


def body_bytes(body):
    if body is None:
        return None
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def send(port, name, timeout=60):
    method, path, body, _, _ = REQUESTS[name]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body_bytes(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def cut_stream(port):
    """Starts a long stream and leaves after the first event."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    body = json.dumps({"inputs": "Once", "parameters": {"max_new_tokens": 200}}).encode()
    s.sendall(b"POST /models/gpt2/generate_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
              b"Content-Type: application/json\r\n\r\n%s" % (len(body), body))
    got = b""
    # A refused stream (429 when the queue is full) answers at once and keeps
    # the connection: stop at its headers.
    while b"data:" not in got and not (b"\r\n\r\n" in got and not got.startswith(b"HTTP/1.1 200")):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    s.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, port, expected, deadline):
        self.port, self.expected, self.deadline = port, expected, deadline
        self.counts, self.errors, self.lock = {}, [], threading.Lock()

    def record(self, name, status, body):
        allowed, checked = REQUESTS[name][3], REQUESTS[name][4]
        problem = None
        if status >= 500:
            problem = "%s: %d %r" % (name, status, body[:200])
        elif status not in allowed | OVERLOAD:
            problem = "%s: unexpected %d %r" % (name, status, body[:200])
        elif checked and status == 200 and body != self.expected[name]:
            problem = self.compare(name, body)
        with self.lock:
            self.counts[(name, status)] = self.counts.get((name, status), 0) + 1
            if problem and len(self.errors) < 20:
                self.errors.append(problem)

    def compare(self, name, body):
        """None when body is the answer learned alone, up to the last bits a
        different batch size may change in a score (1e-5); a stream must match
        exactly."""
        def events(b):
            return json.dumps([json.loads(line[5:]) for line in b.decode().split("\n")
                               if line.startswith("data:")])
        try:
            if name == "stream":
                same_prediction(events(body), events(self.expected[name]), 1e-5, name)
            else:
                same_prediction(body, self.expected[name], 1e-5, name)
            return None
        except (TestFailure, ValueError) as e:
            return str(e)[:300]

    def client(self, seed):
        rng = random.Random(seed)
        names = list(REQUESTS)
        while time.monotonic() < self.deadline:
            try:
                if rng.random() < 0.05:
                    cut_stream(self.port)
                    continue
                name = rng.choice(names)
                self.record(name, *send(self.port, name))
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    if len(self.errors) < 20:
                        self.errors.append("connection error: %r" % e)


def main():
    binary, seconds = sys.argv[1], float(sys.argv[2])
    n_clients = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    harness.BINARY = os.path.abspath(binary)
    harness.WORKDIR = harness.make_workdir()
    d = Daemon(["--model", "sst2=" + os.path.join(FIX, "distilbert-sst2-tiny"),
                "--model", "gpt2=" + os.path.join(FIX, "gpt2-tiny"),
                "--model", "clip=" + os.path.join(FIX, "clip-tiny"),
                "--max-queue", "64", "--max-connections", "512", "--access-log", "false"], label="soak")
    d.start()
    passed = failed = 0
    try:
        expected = {n: send(d.port, n)[1] for n in REQUESTS if REQUESTS[n][4]}
        soak = Soak(d.port, expected, time.monotonic() + seconds)
        threads = [threading.Thread(target=soak.client, args=(i,), daemon=True) for i in range(n_clients)]
        for t in threads:
            t.start()
        curve, t0 = [], time.monotonic()
        while any(t.is_alive() for t in threads) and time.monotonic() < soak.deadline + 120:
            curve.append((round(time.monotonic() - t0), rss_kib(d.proc.pid)))
            time.sleep(max(1.0, seconds / 60))
        print("resident memory (s, MiB): " + " ".join("%d:%.0f" % (t, k / 1024) for t, k in curve))
        total = sum(soak.counts.values())
        print("%d requests in %.0f s with %d connections" % (total, seconds, n_clients))
        for (name, status), n in sorted(soak.counts.items()):
            print("  %-16s %d x %d" % (name, status, n))
        results = []
        results.append(("soak_no_errors", not soak.errors, "; ".join(soak.errors[:5])))
        warm = [k for t, k in curve if t >= seconds / 3]
        growth = (max(warm) - min(warm)) / 1024 if warm else 0
        results.append(("soak_memory_flat", growth < 64,
                        "resident memory grew %.0f MiB after warm-up" % growth))
        alive = d.alive()
        d.stop(timeout=60)
        results.append(("soak_daemon_alive", alive, "the daemon died during the soak"))
        bad = harness.sanitizer_lines(d.stderr())
        results.append(("soak_no_sanitizer_report", not bad, "\n".join(bad[:10])))
        for name, ok, why in results:
            print(("ok   " if ok else "FAIL ") + name + ("" if ok else ": " + why))
            passed, failed = passed + ok, failed + (not ok)
    finally:
        harness.kill_all()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
