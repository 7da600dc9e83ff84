"""The HTTP suite's harness: the daemon under test, an HTTP client, the CLI
oracle and a tiny test registry.

Everything here talks to 127.0.0.1 only, and every wait is bounded by a
deadline, so a hung daemon fails a test instead of hanging the suite.
Python 3 standard library only.
"""

import http.client
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TINY = os.path.join(REPO, "tests", "fixtures", "distilbert-sst2-tiny")
DEMO = os.path.join(REPO, "models", "demo", "sst2-distilbert-small")
GOLDEN = os.path.join(REPO, "tests", "fixtures", "golden", "distilbert.json")
DEMO_EXPECTED = os.path.join(REPO, "models", "demo", "expected.json")

HOST = "127.0.0.1"

# Set by the runner before any test runs.
BINARY = None
WORKDIR = None  # a temporary directory for daemon logs

# Slow builds (ASan) stretch every deadline by this factor.
SLOW = float(os.environ.get("PREDICTD_TEST_SLOW", "1"))

# A command every daemon runs under, e.g. valgrind (make valgrind-test); the
# CLI oracle runs bare. WRAPPER_LOG is valgrind's --log-file, %p the pid;
# without one, valgrind reports in the daemon's stderr.
WRAPPER = shlex.split(os.environ.get("PREDICTD_TEST_WRAPPER", ""))
VALGRIND = any(os.path.basename(arg) == "valgrind" for arg in WRAPPER)
WRAPPER_LOG = next((a.split("=", 1)[1] for a in WRAPPER if a.startswith("--log-file=")), None)

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# The first line of a valgrind record (after "Thread N:") that is an error:
# memcheck's error kinds, the leaks it counts as errors, a fatal signal.
# "possibly lost" and "still reachable" blocks are not errors.
VALGRIND_MARKS = ("Invalid ", "uninitialised", "unaddressable", "overlap", "fishy value",
                  "Mismatched ", "definitely lost in", "indirectly lost in", "Jump to the invalid",
                  "Process terminating")


class TestFailure(Exception):
    """An assertion of the suite failed; the message says what and why."""


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(got, want, what):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


def close(got, want, tol, what):
    if abs(got - want) > tol:
        raise TestFailure("%s: got %r, want %r (tolerance %g)" % (what, got, want, tol))


def sanitizer_lines(text):
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKS)]


def valgrind_records(text):
    """valgrind's error records in a log (its lines `==PID== ...`), each one
    string: the error and its stacks."""
    records, cur = [], []
    for line in text.splitlines() + ["==0=="]:
        m = re.match(r"==\d+== ?(.*)$", line)
        if not m:
            continue
        if m.group(1).strip():
            cur.append(m.group(1))
        elif cur:
            head = cur[1] if cur[0].startswith("Thread ") and len(cur) > 1 else cur[0]
            if any(mark in head for mark in VALGRIND_MARKS):
                records.append("\n".join(cur))
            cur = []
    return records


def valgrind_verdict(text):
    """What is wrong with the summary valgrind writes at exit: None when it
    counts no error and nothing definitely or indirectly lost."""
    errors = re.findall(r"ERROR SUMMARY: ([\d,]+) errors", text)
    if not errors:
        return "no valgrind ERROR SUMMARY: the daemon did not exit by itself"
    problems = []
    if errors[-1] != "0":
        problems.append("%s errors" % errors[-1])
    for kind, n in re.findall(r"(definitely|indirectly) lost: ([\d,]+) bytes", text):
        if n != "0":
            problems.append("%s bytes %s lost" % (n, kind))
    return ", ".join(problems) or None


# ---- HTTP ------------------------------------------------------------------

class Response:
    """A complete HTTP answer: status, headers (case-insensitive) and body bytes."""

    def __init__(self, status, reason, headers, body, method="GET"):
        self.method = method
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received
        self.body = body

    def header(self, name):
        """The value of header name, or None; fails if it appears twice."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        if len(values) > 1:
            fail("header %s appears %d times" % (name, len(values)))
        return values[0] if values else None

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            fail("body is not JSON (%s): %r" % (e, self.body[:200]))

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


def read_response(conn, method="GET"):
    r = conn.getresponse()
    body = r.read()
    return Response(r.status, r.reason, r.getheaders(), body, method)


def request(port, method, path, body=None, headers=None, timeout=10):
    """One request on a fresh connection; returns a Response."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout * SLOW)
    try:
        hdrs = dict(headers or {})
        if body is not None and "Content-Type" not in hdrs and isinstance(body, (bytes, str)):
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=hdrs)
        return read_response(conn, method)
    finally:
        conn.close()


def q(text):
    """The query string ?text=... for text (str or bytes), every byte escaped."""
    return "?text=" + urllib.parse.quote(text, safe="")


def expect(resp, status, body=None, content_type="application/json", allow=None):
    """Asserts status, Content-Type, the exact body (bytes or str) and the Allow header."""
    eq(resp.status, status, "status (body %r)" % resp.body[:300])
    if content_type is not None:
        eq(resp.header("Content-Type"), content_type, "Content-Type")
    if body is not None:
        want = body.encode("utf-8") if isinstance(body, str) else body
        eq(resp.body, want, "body")
    if allow is not None:
        eq(resp.header("Allow"), allow, "Allow header")
    cl = resp.header("Content-Length")
    if cl is not None and resp.method != "HEAD":
        eq(int(cl), len(resp.body), "Content-Length")


def stream_post(port, path, total, timeout=10, chunk=65536, chunked=False):
    """POSTs a body of total bytes with http.client, a chunk at a time, and
    stops sending as soon as the server answers or closes (as a client that
    watches its socket does). Returns (Response or None, bytes sent)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout * SLOW)
    deadline = time.monotonic() + timeout * SLOW
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(total))
        conn.endheaders()
        sent = 0
        data = b" " * chunk
        while sent < total and time.monotonic() < deadline:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:
                break  # an early answer (or a close)
            n = min(chunk, total - sent)
            try:
                if chunked:
                    conn.send(b"%x\r\n" % n + data[:n] + b"\r\n")
                else:
                    conn.send(data[:n])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
        if chunked and sent == total:
            try:
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        try:
            return read_response(conn, "POST"), sent
        except (http.client.HTTPException, ConnectionResetError, BrokenPipeError):
            return None, sent
    finally:
        conn.close()


def same_prediction(got, want, tol, what="answer"):
    """Asserts that two prediction bodies (JSON, any request form) have the
    same structure and labels, and scores within tol of each other."""
    def walk(a, b, where):
        if isinstance(b, list):
            check(isinstance(a, list) and len(a) == len(b), "%s%s: got %r, want %r"
                  % (what, where, a, b))
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, "%s[%d]" % (where, i))
        elif isinstance(b, dict):
            check(isinstance(a, dict) and list(a) == list(b), "%s%s: keys %r, want %r"
                  % (what, where, a, b))
            for k in b:
                walk(a[k], b[k], "%s.%s" % (where, k))
        elif isinstance(b, float):
            check(isinstance(a, float) and abs(a - b) <= tol, "%s%s: %r, want %r (tolerance %g)"
                  % (what, where, a, b, tol))
        else:
            eq(a, b, what + where)
    walk(json.loads(got), json.loads(want), "")


def daemon_time(value):
    """A time option's value for the daemon's command line (a batch wait the
    harness must act within, a shutdown timeout), as a string. The tests'
    values hold at ASan's speed (SLOW 4); under a wrapper, whose daemon is
    slower still, they are stretched SLOW/4 times."""
    return str(int(value * max(1.0, SLOW / 4)) if WRAPPER else value)


def free_port():
    """A port nothing listens on now (the daemon cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def connect(port, timeout=5):
    s = socket.create_connection((HOST, port), timeout=timeout * SLOW)
    return s


def recv_all(sock, deadline):
    """Reads until EOF or the deadline; returns (bytes, how) with how one of
    "eof", "reset", "timeout"."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk


# ---- the daemon -------------------------------------------------------------

class Daemon:
    """One predictd process on a free loopback port, its stderr in a file."""

    _count = 0
    started = []  # every daemon started, so the runner can show their logs

    def __init__(self, args, label="daemon", env=None):
        self.args = list(args)
        self.label = label
        self.env = env
        self.proc = None
        self.port = None
        Daemon._count += 1
        self.log_path = os.path.join(WORKDIR, "%02d-%s.stderr" % (Daemon._count, label))
        self.exit_code = None
        self.wrapper_log = None  # where the wrapper (valgrind) reports on this run
        self._reported = 0  # sanitizer lines already reported
        self._records = 0  # valgrind records already reported
        Daemon.started.append(self)

    def spawn(self):
        """Starts the process on a free port, without waiting for it."""
        self.port = free_port()
        argv = WRAPPER + [BINARY] + self.args + ["--host", HOST, "--port", str(self.port)]
        self._log = open(self.log_path, "ab")
        if WRAPPER_LOG:  # relative to the daemon's directory, REPO
            os.makedirs(os.path.dirname(os.path.join(REPO, WRAPPER_LOG)), exist_ok=True)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=self.env, cwd=REPO)
        self.wrapper_log = (os.path.join(REPO, WRAPPER_LOG.replace("%p", str(self.proc.pid)))
                            if WRAPPER_LOG else self.log_path)
        _live.add(self)

    def start(self, ready_timeout=30):
        """Starts the daemon and waits for /health 200; retries on a port race."""
        for _ in range(5):
            self.spawn()
            if self._wait_ready(ready_timeout * SLOW):
                return self
            if self.proc.poll() is not None and "cannot listen" in self.stderr():
                self._log.close()
                continue  # someone took the port between our probe and its bind
            self.kill()
            fail("%s did not become ready within %ds; stderr:\n%s"
                 % (self.label, ready_timeout * SLOW, self.stderr_tail()))
        fail("%s: no free port after 5 attempts" % self.label)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = request(self.port, "GET", "/health", timeout=2)
                if r.status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        """Sends SIGTERM and returns at once."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        """Waits for the exit; returns the exit code or None on timeout."""
        try:
            self.exit_code = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            return None
        _live.discard(self)
        self._log.close()
        return self.exit_code

    def stop(self, timeout=10):
        """SIGTERM, then asserts exit code 0 within timeout and a clean stderr."""
        if self.proc.poll() is None:
            self.terminate()
        code = self.wait(timeout)
        if code is None:
            self.kill()
            fail("%s did not exit within %ds of SIGTERM" % (self.label, timeout * SLOW))
        self.check_clean()
        if code != 0:
            fail("%s exited with %d, want 0" % (self.label, code))

    def check_clean(self):
        """Fails on sanitizer reports in stderr, or valgrind records in its
        log, not reported before; once the daemon has exited under valgrind,
        on a summary counting errors or definite or indirect leaks."""
        lines = sanitizer_lines(self.stderr())
        bad, self._reported = lines[self._reported:], len(lines)
        if bad:
            fail("%s: sanitizer report in stderr (%s):\n%s"
                 % (self.label, self.log_path, "\n".join(bad[:20])))
        if not VALGRIND:
            return
        text = read_text(self.wrapper_log)
        records = valgrind_records(text)
        bad, self._records = records[self._records:], len(records)
        if bad:
            fail("%s: valgrind error records: %d (%s); the first %d:\n%s"
                 % (self.label, len(bad), self.wrapper_log, min(len(bad), 3),
                    "\n\n".join(bad[:3])))
        verdict = valgrind_verdict(text) if self.exit_code is not None else None
        if verdict:
            fail("%s: valgrind: %s (%s)" % (self.label, verdict, self.wrapper_log))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _live.discard(self)
        try:
            self._log.close()
        except Exception:
            pass

    def stderr(self):
        return read_text(self.log_path)

    def stderr_tail(self, n=40):
        lines = self.stderr().splitlines()
        return "\n".join("    | " + line for line in lines[-n:])

    # Shorthands bound to this daemon's port.
    def get(self, path, **kw):
        return request(self.port, "GET", path, **kw)

    def post(self, path, body=None, **kw):
        return request(self.port, "POST", path, body=body, **kw)

    def metrics(self):
        r = self.get("/metrics")
        eq(r.status, 200, "GET /metrics status")
        return r.body.decode("utf-8")


_live = set()


def read_text(path):
    """A log file's text ("" if it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def kill_all():
    """Kills every daemon still running (the runner's last resort)."""
    for d in list(_live):
        d.kill()


# ---- the CLI oracle ----------------------------------------------------------

_oracle_cache = {}
_oracle_lock = threading.Lock()


def oracle(text=None, body=None, model=TINY):
    """What `predictd predict` prints for text (as ?text=) or body (a JSON
    string), without the trailing newline: the exact body POST /predict must
    answer. Returns (bytes, exit status)."""
    key = (text, body, model)
    with _oracle_lock:
        if key in _oracle_cache:
            return _oracle_cache[key]
    argv = [BINARY, "predict", "--model", model]
    argv += ["--text", text] if text is not None else ["--json", body]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60 * SLOW,
                       cwd=REPO)
    err = p.stderr.decode("utf-8", "replace")
    bad = sanitizer_lines(err)
    if bad:
        fail("the CLI oracle reported a sanitizer error:\n" + "\n".join(bad[:20]))
    if p.returncode not in (0, 1) or not p.stdout.endswith(b"\n"):
        fail("the CLI oracle failed (exit %d): %s" % (p.returncode, err.strip()))
    out = (p.stdout[:-1], p.returncode)
    with _oracle_lock:
        _oracle_cache[key] = out
    return out


def oracle_many(items, model=TINY, workers=4):
    """oracle() for many (text, body) pairs, a few processes at a time."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda tb: oracle(tb[0], tb[1], model)[0], items))


def metric(text, series):
    """The value of one series (name and labels exactly as rendered, e.g.
    'predictd_batch_size_count{model="tiny"}') in a /metrics page, or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line[len(series) + 1:])
    return None


def wait_for(what, fn, timeout):
    """Polls fn() until it returns a true value; fails after timeout seconds
    (stretched for slow builds). Returns that value."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("timed out after %.1fs waiting for %s" % (timeout * SLOW, what))
        time.sleep(0.02)


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---- the registry -------------------------------------------------------------

TESTS = []

# Daemon configurations shared by the tests that name them. Each runs once
# for all its tests and is stopped (exit 0 asserted) after the last one.
CONFIGS = {
    "default": ["--model", "tiny=" + TINY, "--model", "demo=" + DEMO, "--max-body-bytes",
                str(1 << 20)],
}


def test(daemon="default"):
    """Registers a test. daemon names a CONFIGS entry: the test gets that
    running Daemon as its argument. daemon=None: the test takes no argument
    and starts whatever it needs itself."""
    def register(fn):
        TESTS.append((fn.__name__, daemon, fn))
        return fn
    return register


def config(name, args):
    CONFIGS[name] = list(args)


def make_workdir():
    return tempfile.mkdtemp(prefix="predictd-http-")
