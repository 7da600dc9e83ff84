"""The deployment suite's harness: processes on loopback, an HTTP client,
readers for the Dockerfile, the YAML files and the systemd unit, and the
registry of tests.

Every process it starts listens on 127.0.0.1 only and every wait has a
deadline, so a hung daemon fails a test instead of hanging the suite.
Python 3 standard library only (PyYAML is used when installed).
"""

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import miniyaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOCKER = os.path.join(REPO, "docker")
K8S = os.path.join(DOCKER, "k8s")
DEMO = os.path.join(REPO, "models", "demo")
TINY = os.path.join(REPO, "tests", "fixtures", "distilbert-sst2-tiny")
GPT2_TINY = os.path.join(REPO, "tests", "fixtures", "gpt2-tiny")
HOST = "127.0.0.1"

# Set by the runner.
BINARY = None
WORKDIR = None
SLOW = float(os.environ.get("PREDICTD_TEST_SLOW", "1"))

TESTS = []  # (name, function)


def test(fn):
    """Registers fn as a test named after it."""
    TESTS.append((fn.__name__, fn))
    return fn


class TestFailure(Exception):
    """An assertion failed; the message says what and why."""


class Skip(Exception):
    """The test cannot run here (a tool is missing); the message says which."""


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(got, want, what):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


def note(msg):
    """A line of information under the test's result (figures, choices)."""
    print("    " + msg, flush=True)


def rel(path):
    return os.path.relpath(path, REPO)


def workdir(name):
    """A fresh folder in the run's working directory."""
    d = tempfile.mkdtemp(prefix=name + "-", dir=WORKDIR)
    return d


# ---- HTTP ---------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            fail("body is not JSON (%s): %r" % (e, self.body[:200]))

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


def request(port, method, path, body=None, headers=None, timeout=10):
    """One request to 127.0.0.1:port on a fresh connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout * SLOW)
    try:
        hdrs = dict(headers or {})
        if body is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def free_port():
    """A loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(what, cond, timeout):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    fail("timed out after %gs waiting for %s" % (timeout * SLOW, what))


def metric_sum(text, name, **labels):
    """The sum of the samples of name whose labels include labels."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', head))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


# ---- processes ---------------------------------------------------------------------

_live = set()


class Proc:
    """A process started by a test, its output in a file under WORKDIR."""

    _count = 0

    def __init__(self, argv, label, env=None, cwd=None, port=None):
        Proc._count += 1
        self.argv = list(argv)
        self.label = label
        self.port = port
        self.log_path = os.path.join(WORKDIR, "%02d-%s.log" % (Proc._count, label))
        self._log = open(self.log_path, "ab")
        # A process group of its own, so kill() also ends its children (nginx's
        # workers would outlive a SIGKILLed master).
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=env, cwd=cwd or REPO,
                                     start_new_session=True)
        self.pid = self.proc.pid
        _live.add(self)

    def alive(self):
        """Whether the process runs. A dead one stays unreaped (WNOWAIT), so
        that kill() can still name its process group."""
        if self.proc.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "\n".join("    | " + l for l in self.log().splitlines()[-n:])

    def wait_healthy(self, timeout=30, path="/health"):
        """Waits for GET path to answer 200; fails with the log if it never does."""
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            if not self.alive():
                fail("%s exited with %s before answering %s 200:\n%s"
                     % (self.label, self.proc.poll(), path, self.log_tail()))
            try:
                if request(self.port, "GET", path, timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        fail("%s: %s not 200 within %gs:\n%s" % (self.label, path, timeout * SLOW,
                                                 self.log_tail()))

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            code = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            return None
        self._close()
        return code

    def stop(self, timeout=15):
        """SIGTERM; asserts exit 0 within timeout."""
        self.signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.kill()
            fail("%s did not exit within %gs of SIGTERM" % (self.label, timeout * SLOW))
        if code != 0:
            fail("%s exited with %d after SIGTERM, want 0:\n%s" % (self.label, code,
                                                                   self.log_tail()))

    def kill(self):
        """SIGKILL to the process and every process of its group."""
        if self.proc.returncode is None:  # not reaped yet, so its pid still names its group
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._close()

    def _close(self):
        _live.discard(self)
        try:
            self._log.close()
        except OSError:
            pass

    def get(self, path, **kw):
        return request(self.port, "GET", path, **kw)

    def post(self, path, body=None, **kw):
        return request(self.port, "POST", path, body=body, **kw)


def kill_all():
    for p in list(_live):
        p.kill()


def predictd(args, label="predictd", env=None):
    """predictd with args on a free loopback port, waited for until /health is 200."""
    port = free_port()
    argv = [BINARY] + list(args) + ["--host", HOST, "--port", str(port)]
    return Proc(argv, label, env=env, port=port).wait_healthy()


def clean_env(extra=None):
    """The environment of this process without PREDICTD_* and NOTIFY_SOCKET (so
    the caller's settings cannot leak into a daemon), plus extra."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREDICTD_") or k == "PREDICTD_BLAS_REEXEC"}
    env.pop("PREDICTD_BLAS_REEXEC", None)
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra or {})
    return env


# ---- predictd's own description of its options ---------------------------------------

_help = None


def options():
    """{"--name": "PREDICTD_NAME"} for every option `predictd --help` lists,
    and the defaults {"--name": "value"}."""
    global _help
    if _help is None:
        out = subprocess.run([BINARY, "--help"], capture_output=True, timeout=10).stdout.decode()
        opts, defaults, last = {}, {}, None
        for line in out.splitlines():
            m = re.match(r"^  (--[a-z0-9-]+)(?: (\S+))?(?: \(default (.*)\))?$", line)
            if m:
                last = m.group(1)
                opts[last] = None
                if m.group(3) is not None:
                    defaults[last] = m.group(3)
                continue
            m = re.search(r"env (PREDICTD_[A-Z0-9_]+)", line)
            if m and last:
                opts[last] = m.group(1)
        check("--port" in opts and opts["--port"] == "PREDICTD_PORT",
              "could not read the options from `predictd --help`")
        _help = (opts, defaults)
    return _help


def check_args(args, where):
    """Every --option in args is one predictd knows."""
    known, _ = options()
    for a in args:
        if a.startswith("--"):
            name = a.split("=", 1)[0]
            check(name in known, "%s: %s is not a predictd option (see predictd --help)"
                  % (where, name))


def check_env_names(names, where):
    known = {v for v in options()[0].values() if v}
    for n in names:
        if n.startswith("PREDICTD_"):
            check(n in known, "%s: %s is not a predictd variable (see predictd --help)"
                  % (where, n))


# ---- YAML ------------------------------------------------------------------------------

try:
    import yaml as _pyyaml
except ImportError:
    _pyyaml = None
# PREDICTD_DEPLOY_MINIYAML=1 reads with miniyaml even where PyYAML is
# installed, to test the fallback itself.
_use_pyyaml = _pyyaml is not None and not os.environ.get("PREDICTD_DEPLOY_MINIYAML")
YAML_READER = "PyYAML" if _use_pyyaml else "tests/deploy/miniyaml.py" + (
    "" if _pyyaml is not None else " (PyYAML is not installed)")


def parse_yaml(text, where):
    """Every non-empty document of text."""
    if _use_pyyaml:
        try:
            return [d for d in _pyyaml.safe_load_all(text) if d is not None]
        except _pyyaml.YAMLError as e:
            fail("%s does not parse: %s" % (where, e))
    try:
        return miniyaml.load_all(text, where)
    except miniyaml.YamlError as e:
        fail("%s does not parse: %s" % (where, e))


def load_yaml(path):
    """Every document of the YAML file at path."""
    return parse_yaml(read(path), rel(path))


def k8s_docs():
    """{(kind, name): (document, file)} of every manifest in docker/k8s."""
    out = {}
    for name in sorted(os.listdir(K8S)):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(K8S, name)
        for doc in load_yaml(path):
            check(isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc,
                  "%s: a document without kind and apiVersion" % rel(path))
            key = (doc["kind"], doc["metadata"]["name"])
            check(key not in out, "%s: %s/%s defined twice" % (rel(path), key[0], key[1]))
            out[key] = (doc, path)
    return out


# ---- the Dockerfile ----------------------------------------------------------------------

class Instruction:
    def __init__(self, keyword, args, line):
        self.keyword = keyword
        self.args = args
        self.line = line

    def exec_form(self):
        """The JSON array of an exec-form instruction, or None for shell form."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(.*)$", text, re.S)
            text = m.group(1) if m else ""
        text = text.strip()
        if not text.startswith("["):
            return None
        try:
            v = json.loads(text)
        except ValueError as e:
            fail("Dockerfile:%d: %s is not valid JSON: %s" % (self.line, self.keyword, e))
        check(isinstance(v, list) and all(isinstance(x, str) for x in v),
              "Dockerfile:%d: %s must be a list of strings" % (self.line, self.keyword))
        return v

    def __repr__(self):
        return "%s %s" % (self.keyword, self.args)


def dockerfile(path=None):
    """The Dockerfile's stages: [(FROM instruction, [instructions])]."""
    path = path or os.path.join(DOCKER, "Dockerfile")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    stages, text, start = [], "", None
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if start is None and (not stripped or stripped.startswith("#")):
            continue
        if start is not None and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if start is None:
            start = n
        if line.rstrip().endswith("\\"):
            text += line.rstrip()[:-1] + " "
            continue
        text += line
        m = re.match(r"^\s*([A-Za-z]+)\s*(.*)$", text, re.S)
        check(m is not None, "Dockerfile:%d: cannot read %r" % (start, text))
        ins = Instruction(m.group(1).upper(), m.group(2).strip(), start)
        if ins.keyword == "FROM":
            stages.append((ins, []))
        else:
            check(stages, "Dockerfile:%d: %s before FROM" % (start, ins.keyword))
            stages[-1][1].append(ins)
        text, start = "", None
    return stages


def docker_env(instructions):
    """The variables ENV sets, in order (both `ENV K=V K2=V2` and `ENV K V`)."""
    env = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.args)
        if words and "=" not in words[0]:
            env[words[0]] = ins.args.split(None, 1)[1].strip()
            continue
        for w in words:
            k, _, v = w.partition("=")
            env[k] = v
    return env


def apt_packages(run_args):
    """The package names of every `apt-get install` in a RUN's shell text."""
    pkgs = []
    for m in re.finditer(r"apt-get\s+install\s+((?:[^&;|]|\\\n)*)", run_args):
        pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def image_command(stages=None):
    """(argv, env, healthcheck argv) of the final stage: ENTRYPOINT + CMD, ENV."""
    stages = stages or dockerfile()
    final = stages[-1][1]
    entry = [i for i in final if i.keyword == "ENTRYPOINT"]
    cmd = [i for i in final if i.keyword == "CMD"]
    hc = [i for i in final if i.keyword == "HEALTHCHECK"]
    check(len(entry) == 1, "the final stage needs exactly one ENTRYPOINT")
    argv = entry[0].exec_form()
    check(argv is not None, "Dockerfile:%d: ENTRYPOINT must be the exec form (a JSON list), so "
          "predictd is PID 1 and gets SIGTERM itself" % entry[0].line)
    if cmd:
        c = cmd[-1].exec_form()
        check(c is not None, "Dockerfile:%d: CMD must be the exec form" % cmd[-1].line)
        argv = argv + c
    return argv, docker_env(final), (hc[-1].exec_form() if hc else None)


def map_paths(value, mapping):
    """value with every container path prefix in mapping replaced by its local path."""
    for container, local in mapping:
        value = re.sub(r"(?<![\w/])" + re.escape(container) + r"(?=/|$|,|\s)", local, value)
    return value


def run_container(argv, env, mapping, label):
    """Runs a container's command line as a local process: paths mapped, the
    host and port replaced by 127.0.0.1 and a free port (the only two changes),
    nothing inherited from this process's PREDICTD_* variables."""
    port = free_port()
    argv = [map_paths(a, mapping) for a in argv]
    env = {k: map_paths(str(v), mapping) for k, v in env.items()}
    # Options given as arguments win over the environment: drop host and port
    # from both, then set them where the image would (the environment).
    argv2, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--host", "--port"):
            skip = True
            continue
        if a.startswith(("--host=", "--port=")):
            continue
        argv2.append(a)
    env.update({"PREDICTD_HOST": HOST, "PREDICTD_PORT": str(port)})
    full_env = clean_env(env)
    return Proc(argv2, label, env=full_env, port=port), full_env


def container_mapping():
    """Container paths to local ones: the image's binary and its /models."""
    return [("/usr/local/bin/predictd", BINARY), ("/models", DEMO)]


def have(tool):
    return shutil.which(tool) is not None


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- nginx -------------------------------------------------------------------------------

NGINX_CONF = os.path.join(DOCKER, "nginx.conf")


def nginx_site(upstream_ports, listen_port):
    """docker/nginx.conf with its upstream servers replaced by 127.0.0.1 ports
    (each keeping the shipped server's parameters) and its listen address by
    127.0.0.1:listen_port. Nothing else changes."""
    text = read(NGINX_CONF)
    servers = re.findall(r"^(\s*)server\s+([\w.-]+):(\d+)((?:\s+[^;\s]+)*)\s*;\s*$", text, re.M)
    check(servers, "docker/nginx.conf: no `server HOST:PORT ...;` line in the upstream")
    params = {s[3] for s in servers}
    check(len(params) == 1, "docker/nginx.conf: the upstream servers differ in their "
          "parameters: %s" % sorted(params))
    indent, _, _, param = servers[0]
    lines = "".join("%sserver %s:%d%s;\n" % (indent, HOST, p, param) for p in upstream_ports)
    out, placed = [], False
    for line in text.splitlines(True):
        if re.match(r"^\s*server\s+[\w.-]+:\d+", line):
            if not placed:
                out.append(lines)
                placed = True
            continue
        m = re.match(r"^(\s*)listen\s+(\d+)\s*;", line)
        if m:
            line = "%slisten %s:%d;\n" % (m.group(1), HOST, listen_port)
        out.append(line)
    site = "".join(out)
    check(re.search(r"listen %s:%d;" % (re.escape(HOST), listen_port), site),
          "docker/nginx.conf: no `listen PORT;` line to move to loopback")
    return site


class Nginx:
    """A real nginx on 127.0.0.1 serving docker/nginx.conf (rewritten by
    nginx_site) in front of upstream_ports, all its files in its own folder."""

    def __init__(self, upstream_ports, label="nginx"):
        if not have("nginx") and not os.path.exists("/usr/sbin/nginx"):
            raise Skip("nginx is not installed (Debian package nginx)")
        self.exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.dir = workdir(label)
        os.chmod(self.dir, 0o755)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(self.dir, sub))
            os.chmod(os.path.join(self.dir, sub), 0o777)  # the workers may run as nobody
        self.port = free_port()
        self.error_log = os.path.join(self.dir, "error.log")
        self.access_log = os.path.join(self.dir, "access.log")
        with open(os.path.join(self.dir, "predictd.conf"), "w") as f:
            f.write(nginx_site(upstream_ports, self.port))
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write("""# Generated by tests/deploy around docker/nginx.conf.
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format upstreams '$status "$request" $upstream_addr $upstream_status';
    access_log {d}/access.log upstreams;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/predictd.conf;
}}
""".format(d=self.dir))
        self.proc = None

    def argv(self, *extra):
        return [self.exe, "-p", self.dir + "/", "-e", self.error_log, "-c", self.conf] + list(extra)

    def test_config(self):
        p = subprocess.run(self.argv("-t"), capture_output=True, timeout=30)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        check(p.returncode == 0, "nginx -t rejects docker/nginx.conf:\n%s" % out)
        return out

    def start(self):
        self.test_config()
        self.proc = Proc(self.argv(), "nginx", port=self.port)
        wait_for("nginx on port %d" % self.port, self._listening, 10)
        return self

    def _listening(self):
        check(self.proc.alive(), "nginx exited with %s:\n%s" % (self.proc.proc.poll(),
                                                                  self.logs()))
        try:
            return request(self.port, "GET", "/nginx-health", timeout=2).status == 200
        except OSError:
            return False

    def logs(self):
        out = []
        for path in (self.error_log,):
            try:
                out.append(read(path)[-4000:])
            except OSError:
                pass
        return "\n".join(out)

    def access_lines(self):
        try:
            return read(self.access_log).splitlines()
        except OSError:
            return []

    def stop(self):
        if self.proc:
            self.proc.stop(15)
