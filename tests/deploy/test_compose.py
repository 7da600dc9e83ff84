"""docker/compose.yaml and docker/nginx.conf: the services agree with each
other and with the image, the replicas' command line serves the demo models,
and a real nginx with the shipped configuration retries, streams and passes
large bodies."""

import http.server
import json
import os
import re
import socket
import socketserver
import subprocess
import threading
import time

import deploylib
from deploylib import (DOCKER, HOST, TINY, Nginx, check, clean_env, container_mapping, eq,
                       free_port, have, image_command, load_yaml, note, read, request,
                       run_container, test)

COMPOSE = os.path.join(DOCKER, "compose.yaml")


def compose():
    docs = load_yaml(COMPOSE)
    eq(len(docs), 1, "documents in docker/compose.yaml")
    return docs[0]


def replicas(c):
    return sorted(n for n in c["services"] if n.startswith("predictd"))


def env_dict(env):
    """Compose's environment, as a mapping or as a list of K=V."""
    if isinstance(env, list):
        return dict(e.split("=", 1) for e in env)
    return {k: "" if v is None else str(v) for k, v in (env or {}).items()}


def unescape(s):
    """A compose string as the container sees it: $$ is a literal $."""
    check(not re.search(r"(?<!\$)\$(?!\$)[{A-Za-z_]", s.replace("$$", "")),
          "compose would substitute the host's variables in %r: write $$ for a literal $" % s)
    return s.replace("$$", "$")


@test
def compose_services_agree():
    c = compose()
    names = replicas(c)
    check(len(names) >= 2, "want at least two predictd replicas, got %s" % names)
    check("nginx" in c["services"], "no nginx service")
    first = c["services"][names[0]]
    for n in names[1:]:
        eq(c["services"][n], first, "service %s (the replicas must differ only in name)" % n)
    # Build from the repository with docker/Dockerfile.
    ctx = os.path.normpath(os.path.join(DOCKER, first["build"]["context"]))
    eq(ctx, deploylib.REPO, "build.context (the repository root)")
    check(os.path.exists(os.path.join(ctx, first["build"]["dockerfile"])),
          "build.dockerfile %s does not exist" % first["build"]["dockerfile"])
    image = first["image"]
    check(":" in image and not image.endswith(":latest"), "image %s: a version tag" % image)
    env = env_dict(first["environment"])
    deploylib.check_env_names(env, "compose.yaml environment")
    eq(env.get("PREDICTD_HOST"), "0.0.0.0", "PREDICTD_HOST (reachable from nginx)")
    # The models volume, read-only, where PREDICTD_MODEL looks.
    vols = [v for v in first.get("volumes", []) if isinstance(v, str) and ":/models" in v]
    check(len(vols) == 1, "want one volume mounted at /models, got %s" % first.get("volumes"))
    src, dst, mode = (vols[0].split(":") + [""])[:3]
    eq((dst, mode), ("/models", "ro"), "models volume target and mode")
    local = os.path.normpath(os.path.join(DOCKER, src))
    check(os.path.isdir(local), "the models volume's source %s is not a folder" % src)
    for item in env["PREDICTD_MODEL"].split(","):
        path = item.split("=", 1)[-1]
        check(path.startswith("/models/"), "PREDICTD_MODEL %s is not under /models" % path)
        check(os.path.isdir(os.path.join(local, path[len("/models/"):])),
              "PREDICTD_MODEL %s: no such folder in %s" % (path, src))
    grace = re.match(r"^(\d+)s$", str(first.get("stop_grace_period", "")))
    check(grace, "stop_grace_period (seconds) above the shutdown timeout")
    shutdown = int(env.get("PREDICTD_SHUTDOWN_TIMEOUT",
                           deploylib.options()[1]["--shutdown-timeout"]))
    check(int(grace.group(1)) > shutdown, "stop_grace_period %s is not above the shutdown "
          "timeout %d s" % (first["stop_grace_period"], shutdown))
    check(first.get("read_only") is True, "read_only: true (predictd writes no file)")
    hc = first.get("healthcheck", {})
    check(hc.get("test") and "/health" in " ".join(hc["test"]), "a healthcheck on /health")
    # nginx: pinned, loopback-only, the shipped config, after healthy replicas.
    ng = c["services"]["nginx"]
    check(":" in ng["image"] and not ng["image"].endswith(":latest"), "nginx image %s: pin a tag"
          % ng["image"])
    check(any(v.startswith("./nginx.conf:/etc/nginx/conf.d/") for v in ng.get("volumes", [])),
          "nginx must mount ./nginx.conf into /etc/nginx/conf.d/")
    for p in ng.get("ports", []):
        check(str(p).startswith("127.0.0.1:"), "nginx publishes %s beyond the host's loopback" % p)
    deps = ng.get("depends_on", {})
    eq(sorted(deps), names, "nginx depends_on")
    for n in names:
        eq(deps[n].get("condition"), "service_healthy", "depends_on %s condition" % n)
    # The upstream names the replicas, each once, at their port.
    site = read(deploylib.NGINX_CONF)
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", site, re.M)
    eq(sorted(s[0] for s in servers), names, "docker/nginx.conf upstream servers")
    for _, port in servers:
        eq(port, env["PREDICTD_PORT"], "upstream port vs PREDICTD_PORT")
    has_compose = have("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    if has_compose:
        p = subprocess.run(["docker", "compose", "-f", COMPOSE, "config", "-q"],
                           capture_output=True, timeout=60)
        check(p.returncode == 0, "docker compose config:\n%s"
              % (p.stdout + p.stderr).decode("utf-8", "replace"))
    else:
        note("the docker compose plugin is not installed: `docker compose config` not run")


@test
def compose_replica_serves():
    """A replica's container (the image's ENTRYPOINT, its ENV overlaid with the
    service's environment) serves the demo models here, and the service's
    healthcheck command passes against it."""
    c = compose()
    svc = c["services"][replicas(c)[0]]
    argv, env, _ = image_command()
    if svc.get("command"):
        argv = argv[:1] + list(svc["command"])
    env.update(env_dict(svc["environment"]))
    p, full_env = run_container(argv, env, container_mapping(), "compose-replica")
    p.wait_healthy(60)
    from test_docker import demo_requests
    demo_requests(p)
    hc = [unescape(a) for a in svc["healthcheck"]["test"]]
    eq(hc[0], "CMD", "healthcheck test form")
    script = [a.replace("/8000", "/%d" % p.port) for a in hc[1:]]
    r = subprocess.run(script, env=full_env, capture_output=True, timeout=10)
    eq(r.returncode, 0, "the compose healthcheck against a healthy replica (%s)"
       % (r.stdout + r.stderr).decode())
    p.stop()


@test
def nginx_config_accepted():
    """nginx -t accepts docker/nginx.conf (upstreams moved to loopback)."""
    n = Nginx([free_port(), free_port()])
    n.test_config()
    site = read(deploylib.NGINX_CONF)
    for directive in ("least_conn", "max_fails=", "fail_timeout=", "proxy_next_upstream ",
                      "proxy_read_timeout", "proxy_buffering off", "keepalive "):
        check(directive in site, "docker/nginx.conf lacks %s" % directive)
    retry = re.search(r"proxy_next_upstream\s+([^;]+);", site).group(1).split()
    for cond in ("error", "timeout", "http_502", "http_503"):
        check(cond in retry, "proxy_next_upstream lacks %s" % cond)


# ---- fake upstreams for what predictd cannot be made to do on demand -----------------------

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeBackend:
    """An HTTP server on 127.0.0.1 whose handler is a function(handler)."""

    def __init__(self, respond):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                respond(self)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = _Server((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def loading_503(h):
    body = b'{"detail":"Model is loading"}'
    h.send_response(503)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def slow_events(h):
    """Server-sent events with a pause: one event, 1.5 s, another."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.end_headers()
    h.wfile.write(b'data: {"token": "one"}\n\n')
    h.wfile.flush()
    time.sleep(1.5)
    h.wfile.write(b'data: {"token": "two"}\n\ndata: [DONE]\n\n')
    h.wfile.flush()


@test
def nginx_retries_next_replica():
    """With one replica answering 503 (loading) and one refusing connections
    (down), every request through nginx still gets the real replica's answer,
    and nginx's log shows it retried both kinds."""
    real = deploylib.predictd(["--model", TINY], label="replica", env=clean_env())
    fake = FakeBackend(loading_503)
    dead = free_port()
    try:
        n = Nginx([fake.port, dead, real.port]).start()
        want = real.post("/predict?text=retried").body
        for i in range(30):
            r = request(n.port, "POST", "/predict?text=retried")
            eq((r.status, r.body), (200, want), "request %d through nginx" % i)
        lines = n.access_lines()
        retried_503 = [l for l in lines if re.search(r" 503, 200$", l)]
        retried_down = [l for l in lines if re.search(r" 502, 200$", l)]
        check(retried_503, "no request was retried after a 503:\n%s" % "\n".join(lines[-10:]))
        check(retried_down, "no request was retried after a refused connection:\n%s"
              % "\n".join(lines[-10:]))
        eq(request(n.port, "GET", "/health").status, 200, "GET /health through nginx")
        eq(request(n.port, "GET", "/metrics").status, 404, "GET /metrics through nginx")
        # Bodies above nginx's 1 MiB default reach predictd (413 is predictd's, at 16 MiB).
        big = json.dumps({"inputs": "fine " * 400000, "truncate": True}).encode()
        check(len(big) > 1 << 20, "the body is above 1 MiB")
        r = request(n.port, "POST", "/predict", body=big, timeout=60)
        eq(r.status, 200, "a %d-byte body through nginx (%r)" % (len(big), r.body[:200]))
        n.stop()
        real.stop()
    finally:
        fake.close()


@test
def nginx_streams_unbuffered():
    """/generate_stream and /v1/completions reach the client as they are
    written: the first event comes through nginx before the upstream's pause
    ends, not with the last one."""
    fake = FakeBackend(slow_events)
    try:
        n = Nginx([fake.port]).start()
        for path in ("/generate_stream", "/models/x/generate_stream", "/v1/completions"):
            s = socket.create_connection((HOST, n.port), timeout=10)
            t0 = time.monotonic()
            s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                      b"Connection: close\r\n\r\n{}" % path.encode())
            data = b""
            while b'"one"' not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            first = time.monotonic() - t0
            check(b'"one"' in data, "%s: no first event: %r" % (path, data))
            check(b'"two"' not in data, "%s: both events came together" % path)
            check(first < 1.0, "%s: the first event took %.2fs through nginx (buffered?)"
                  % (path, first))
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            check(b"[DONE]" in data, "%s: the stream did not finish" % path)
        n.stop()
    finally:
        fake.close()
