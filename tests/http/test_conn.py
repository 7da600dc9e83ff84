"""Connections: slow and idle clients timed out while others are served,
--max-connections, and request framings that must be refused."""

import http.client
import json
import os
import resource
import socket
import threading
import time

from harness import (HOST, SLOW, TINY, Daemon, check, config, connect, daemon_time, eq, expect,
                     oracle, recv_all, request, test, wait_for)

config("timeout_2s", ["--model", "tiny=" + TINY, "--timeout", "2"])


@test(daemon="timeout_2s")
def slow_clients_timed_out(d):
    want = oracle(text="served meanwhile")[0]
    t0 = time.monotonic()
    stalled = {
        "half a request line": b"POST /predict?te",
        "headers without their end": b"POST /predict?text=x HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "half a body": b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{",
    }
    socks = {}
    for what, data in stalled.items():
        s = connect(d.port)
        s.sendall(data)
        socks[what] = s
    # An idle keep-alive connection after a complete exchange is closed too.
    idle = connect(d.port)
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    socks["idle after an answer"] = idle

    served, errors = [], []
    stop = threading.Event()

    def others():
        while not stop.is_set():
            t = time.monotonic()
            try:
                r = request(d.port, "POST", "/predict?text=served%20meanwhile", timeout=5)
                served.append((r.status, r.body, time.monotonic() - t))
            except OSError as e:
                errors.append(e)
            stop.wait(0.1)

    th = threading.Thread(target=others, daemon=True)
    th.start()
    closed = {}
    try:
        for what, s in socks.items():
            data, how = recv_all(s, t0 + 8 * SLOW)
            closed[what] = (how, time.monotonic() - t0, data)
    finally:
        stop.set()
        th.join(10 * SLOW)
        for s in socks.values():
            s.close()
    for what, (how, when, data) in closed.items():
        check(how in ("eof", "reset"), "%s: closed by the server, not %s" % (what, how))
        check(1.5 <= when <= min(4.5 * SLOW, 6), "%s: closed after %.2fs, want about 2s"
              % (what, when))
        if what == "idle after an answer":
            check(data.startswith(b"HTTP/1.1 200 ") and data.endswith(b'{"status":"ok"}'),
                  "the idle connection's answer came first: %r" % data)
        else:
            eq(data, b"", "%s: nothing sent back" % what)
    check(not errors, "other clients failed meanwhile: %r" % errors[:3])
    check(len(served) >= 10, "other clients served meanwhile: only %d" % len(served))
    for status, body, took in served:
        eq((status, body), (200, want), "answer to another client")
        check(took < 1.5 * SLOW, "another client waited %.2fs" % took)


# Idle time alone would never close a client that sends a byte every 0.2 s.
# Every request waits 3 s in the queue: longer than the request timeout,
# whose clock must rest while a request is answered.
config("request_timeout_2s", ["--model", "tiny=" + TINY, "--timeout", "30",
                              "--request-timeout", "2", "--inline-max-us", "0",
                              "--adaptive-batch-wait", "false",
                              "--max-batch-wait-us", daemon_time(3000000)])


def drip(port, data, interval):
    """Sends data a byte at a time; returns (the answer, how it ended) as
    recv_all does, "closed" if the server ended it mid-request."""
    s = connect(port)
    try:
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(interval)
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK) == b"":
                    return b"", "closed"
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
        return recv_all(s, time.monotonic() + 10 * SLOW)
    except (ConnectionResetError, BrokenPipeError):
        return b"", "closed"
    finally:
        s.close()


@test(daemon="request_timeout_2s")
def slowloris_closed_by_request_timeout(d):
    request_line = b"POST /predict?text=hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    # 60 s of header at 0.2 s a byte: cut at --request-timeout.
    got, how = drip(d.port, request_line + b"X-Pad: " + b"a" * 300, 0.2)
    eq((got, how), (b"", "closed"), "a request dripped past --request-timeout")
    # A slow request delivered within the limit is answered, however long
    # the answer takes.
    got, how = drip(d.port, request_line + b"Connection: close\r\n\r\n", 0.01)
    check(got.startswith(b"HTTP/1.1 200 ") and got.endswith(oracle(text="hello")[0]),
          "a slow request within the limit is answered after its wait: %r" % got[-120:])


config("max_conn_8", ["--model", "tiny=" + TINY, "--max-connections", "8"])


def fill(d, n):
    """n keep-alive connections, each known to the server (it has answered
    one request on each), then idle."""
    conns = []
    for _ in range(n):
        c = http.client.HTTPConnection(HOST, d.port, timeout=5 * SLOW)
        c.request("GET", "/health")
        r = c.getresponse()
        eq((r.status, r.read()), (200, b'{"status":"ok"}'), "health on a kept connection")
        conns.append(c)
    return conns


def ninth_refused(d):
    """Asserts that one more connection is refused or closed without an answer."""
    try:
        s = connect(d.port, timeout=2)
    except OSError:
        return  # refused outright
    try:
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        except OSError:
            return
        data, how = recv_all(s, time.monotonic() + 3 * SLOW)
        check(how in ("eof", "reset"), "the 9th connection was closed (it %s)" % how)
        eq(data, b"", "no answer on the 9th connection")
    finally:
        s.close()


@test(daemon="max_conn_8")
def max_connections(d):
    for round_ in range(2):
        conns = fill(d, 8)
        try:
            ninth_refused(d)
            # The 8 are still served.
            conns[0].request("GET", "/health")
            r = conns[0].getresponse()
            eq((r.status, r.read()), (200, b'{"status":"ok"}'), "a kept connection still served")
        finally:
            for c in conns:
                c.close()

        # Once they are closed, new clients are served again.
        def works():
            try:
                r = request(d.port, "GET", "/health", timeout=2)
                return r.status == 200
            except OSError:
                return False
        wait_for("a request to succeed after the 8 closed (round %d)" % round_, works, 5)
        expect(d.post("/predict?text=ok"), 200, oracle(text="ok")[0])



@test(daemon=None)
def descriptor_limit_recovers():
    # Out of file descriptors, MHD stops accepting until connections close;
    # once they have, new clients must be served again (MHD resumes accepting
    # only on its next run, which nothing else would trigger).
    d = Daemon(["--model", "tiny=" + TINY], label="fd_limit").start()
    used = len(os.listdir("/proc/%d/fd" % d.proc.pid))
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (used + 4, used + 4))
    socks = []
    try:
        for _ in range(10):
            s = connect(d.port)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            socks.append(s)
        answered = 0
        deadline = time.monotonic() + 0.5 * SLOW
        for s in socks:
            data, _ = recv_all(s, deadline)
            answered += data.startswith(b"HTTP/1.1 200 ")
        check(answered < 10, "the descriptor limit took effect (all 10 answered)")
    finally:
        for s in socks:
            s.close()

    def works():
        try:
            return request(d.port, "GET", "/health", timeout=1).status == 200
        except OSError:
            return False
    wait_for("a request to succeed once the connections closed", works, 5)
    d.stop()


# ---- framings that parsers disagree on -----------------------------------------------------

BODY = b'{"text":"hello"}'
AMBIGUOUS = [
    (b"Transfer-Encoding: gzip, chunked\r\n\r\n10\r\n" + BODY + b"\r\n0\r\n\r\n", 501,
     "only the chunked Transfer-Encoding is supported"),
    (b"Transfer-Encoding: bogus\r\n\r\n" + BODY, 501,
     "only the chunked Transfer-Encoding is supported"),
    (b"Content-Length : 16\r\n\r\n" + BODY, 400, "a header name contains white space"),
    (b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 16\r\n\r\n" + BODY, 400,
     "a Content-Length or Transfer-Encoding header is folded over lines"),
    (b"Content-Length: 16\r\nContent-Length: 5\r\n\r\n" + BODY, 400,
     "Content-Length is given more than once"),
    (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + BODY + b"\r\n0\r\n\r\n",
     400, "both Content-Length and Transfer-Encoding are given"),
]


@test()
def ambiguous_framing_refused(d):
    # Each once hung the connection until the timeout, or let the body be
    # read as a second request (request smuggling). Now: an answer, then the
    # connection closes, since where the request ends is not known.
    for headers, status, detail in AMBIGUOUS:
        s = connect(d.port)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers)
        got, how = recv_all(s, time.monotonic() + 10 * SLOW)
        s.close()
        what = repr(headers[:40])
        eq(how, "eof", "the connection closed after %s" % what)
        head, _, body = got.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 %d " % status), "status for %s: %r" % (what, head))
        check(b"\r\nConnection: close" in head, "Connection: close for %s: %r" % (what, head))
        eq(body, json.dumps({"detail": detail}, separators=(",", ":")).encode(), "body for " + what)
    # Plain chunked framing is still served.
    s = connect(d.port)
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"10\r\n" + BODY + b"\r\n0\r\n\r\n")
    r = http.client.HTTPResponse(s)
    r.begin()
    eq((r.status, r.read()), (200, oracle(text="hello")[0]), "a chunked request")
    s.close()


@test()
def absolute_form_target(d):
    # RFC 9112 3.2.2: a server must accept "http://host/path" as the target
    # (proxies send it); it routes by its path, as uvicorn does.
    for target in (b"http://127.0.0.1/predict?text=hello", b"HTTP://example.org:8000/predict?text=hello"):
        s = connect(d.port)
        s.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        r = http.client.HTTPResponse(s)
        r.begin()
        eq((r.status, r.read()), (200, oracle(text="hello")[0]), "the answer for %r" % target)
        s.close()
