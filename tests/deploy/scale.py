"""Scale-out behind a real nginx running docker/nginx.conf, in front of
predictd replicas on loopback (the tiny classifier, --threads 1 each).

scale_failover: under load from many client threads, one replica is killed
with SIGKILL; no client request fails (nginx retries on the next replica);
the replica is started again on its port and receives traffic again.

scale_throughput: requests/s through nginx with 1, 2 and 3 replicas (and one
replica without nginx), with wrk when installed, else a Python client.
Figures only: no assertion on speed, which depends on the machine.

Run alone: tests/deploy/scale.sh [BINARY] (the runner with filter "scale_").
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import deploylib
from deploylib import (HERE, HOST, TINY, Nginx, Proc, check, clean_env, eq, fail, free_port,
                       metric_sum, note, request, test, wait_for)

TEXT = "a%20gripping%2C%20beautifully%20acted%20film"
PATH = "/predict?text=" + TEXT


def start_replica(port=None, label="replica"):
    """One predictd replica: the tiny classifier, one compute thread."""
    port = port or free_port()
    argv = [deploylib.BINARY, "--model", TINY, "--threads", "1", "--host", HOST,
            "--port", str(port)]
    return Proc(argv, label, env=clean_env(), port=port).wait_healthy(30)


def served(replica):
    """POST /predict requests this replica has answered (any status)."""
    r = request(replica.port, "GET", "/metrics", timeout=5)
    eq(r.status, 200, "GET /metrics on %s" % replica.label)
    return metric_sum(r.body.decode(), "predictd_requests_total", endpoint="/predict")


def same(body, want):
    """The same label and score to float tolerance: a request batched with
    others may differ from one run alone in the last bits."""
    try:
        got, exp = json.loads(body), json.loads(want)
        return got[0]["label"] == exp[0]["label"] and abs(got[0]["score"] - exp[0]["score"]) < 1e-5
    except (ValueError, LookupError, TypeError):
        return False


class Load:
    """Client threads sending POST /predict through one keep-alive connection
    each, until stop() or max_requests or max_seconds; counts every outcome."""

    def __init__(self, port, threads=16, max_requests=400000, max_seconds=60):
        self.port = port
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds * deploylib.SLOW
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures = []  # (time, what)
        self.expected = None
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _take(self):
        with self.lock:
            if self._stop.is_set() or self.sent >= self.max_requests or \
                    time.monotonic() > self.deadline:
                return False
            self.sent += 1
            return True

    def _run(self):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        while self._take():
            try:
                conn.request("POST", PATH, body=b"", headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                good = r.status == 200 and (self.expected is None or same(body, self.expected))
                what = None if good else "%d %r" % (r.status, body[:200])
            except (OSError, http.client.HTTPException) as e:
                what = "%s: %s" % (type(e).__name__, e)
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            with self.lock:
                if what is None:
                    self.ok += 1
                else:
                    self.failures.append((time.monotonic(), what))
        conn.close()

    def count(self):
        with self.lock:
            return self.ok

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(60)
        check(not any(t.is_alive() for t in self.threads), "a client thread hung")


@test
def scale_failover():
    replicas = [start_replica(label="replica-%d" % i) for i in range(3)]
    want = replicas[0].post(PATH).body
    ng = Nginx([r.port for r in replicas]).start()
    load = Load(ng.port)
    load.expected = want
    victim = replicas[1]
    try:
        time.sleep(2)
        before = served(victim)
        check(before > 0, "replica-1 got no traffic in 2 s of load")
        check(load.count() > 0, "no request succeeded through nginx")
        t_kill = time.monotonic()
        n_kill = load.count()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        victim.kill()
        time.sleep(3)
        others = [served(r) for r in (replicas[0], replicas[2])]
        check(load.count() > n_kill, "no request succeeded after the kill")
        # The same port, as an orchestrator restarting the replica would use.
        try:
            back = start_replica(victim.port, label="replica-1-restarted")
        except deploylib.TestFailure as e:
            fail("could not restart replica-1 on its port %d: %s" % (victim.port, e))
        t_back = time.monotonic()
        wait_for("the restarted replica-1 to receive traffic through nginx",
                 lambda: served(back) > 0 or load.failures, 30)
        t_traffic = time.monotonic()
        time.sleep(1)
    finally:
        load.stop()
    if load.failures:
        first = load.failures[0]
        fail("%d of %d requests failed through nginx; the first, %.2fs after the kill: %s"
             % (len(load.failures), load.sent, first[0] - t_kill, first[1]))
    retried = [l for l in ng.access_lines() if re.search(r"\d{3}, \d{3}$", l)]
    upstream_errors = len(re.findall(r"upstream", ng.logs()))
    note("%d requests, 0 failed; replica-1 served %d before SIGKILL, the others %d and %d by "
         "3 s after it" % (load.sent, before, others[0], others[1]))
    note("nginx retried %d requests on another replica (access log), logged %d upstream errors"
         % (len(retried), upstream_errors))
    note("restarted replica-1 got its first request %.1fs after it was healthy (nginx's "
         "fail_timeout), %d by the end" % (t_traffic - t_back, served(back)))
    check(served(back) > 0, "the restarted replica got no traffic")
    ng.stop()
    for r in (replicas[0], replicas[2], back):
        r.stop()


def wrk_rps(port, seconds, connections):
    script = os.path.join(HERE, "predict.lua")
    url = "http://%s:%d%s" % (HOST, port, PATH)
    p = subprocess.run(["wrk", "-t2", "-c%d" % connections, "-d%ds" % seconds, "-s", script, url],
                       capture_output=True, timeout=seconds + 60)
    out = p.stdout.decode()
    check(p.returncode == 0, "wrk failed:\n%s%s" % (out, p.stderr.decode()))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    check(rps, "no Requests/sec in wrk's output:\n%s" % out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    check(bad is None, "wrk saw %s answers that were not 200:\n%s" % (bad and bad.group(1), out))
    errors = re.search(r"Socket errors: (.*)", out)
    lat = re.search(r"Latency\s+(\S+)", out)
    return float(rps.group(1)), lat.group(1) if lat else "?", errors.group(1) if errors else ""


def python_rps(port, seconds, connections):
    load = Load(port, threads=connections, max_seconds=seconds)
    t0 = time.monotonic()
    time.sleep(seconds)
    load.stop()
    elapsed = time.monotonic() - t0
    check(not load.failures, "%d requests failed: %s" % (len(load.failures), load.failures[0][1]))
    return load.ok / elapsed, "?", ""


@test
def scale_throughput():
    seconds, connections = 5, 32
    use_wrk = shutil.which("wrk") is not None
    measure = wrk_rps if use_wrk else python_rps
    note("client: %s, %d connections, %d s per figure, POST %s; tiny classifier, --threads 1 "
         "per replica, %d CPU cores shared by client, nginx and replicas"
         % ("wrk -t2" if use_wrk else "Python threads (wrk not installed)", connections, seconds,
            PATH, os.cpu_count()))
    replicas = [start_replica(label="bench-%d" % i) for i in range(3)]
    rps, lat, err = measure(replicas[0].port, seconds, connections)
    note("1 replica, no nginx: %8.0f requests/s (mean latency %s)%s"
         % (rps, lat, "; socket errors " + err if err else ""))
    for n in (1, 2, 3):
        ng = Nginx([r.port for r in replicas[:n]], label="nginx-%d" % n).start()
        rps, lat, err = measure(ng.port, seconds, connections)
        note("%d replica%s via nginx: %8.0f requests/s (mean latency %s)%s"
             % (n, "" if n == 1 else "s", rps, lat, "; socket errors " + err if err else ""))
        ng.stop()
    for r in replicas:
        r.stop()

