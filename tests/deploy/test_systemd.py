"""config/predictd.service: systemd's own checks, the settings the service
needs, and the readiness protocol against a fake NOTIFY_SOCKET."""

import os
import re
import signal
import socket
import subprocess
import time

from deploylib import (DEMO, GPT2_TINY, HOST, TINY, Proc, Skip, check, clean_env, eq, free_port,
                       have, note, options, read, request, test, workdir)
import deploylib

UNIT = os.path.join(deploylib.REPO, "config", "predictd.service")
EXEC = "/usr/local/bin/predictd --config /etc/predictd/predictd.json"


def unit():
    """{section: {key: [values]}} of the unit file, comments left out."""
    out, section = {}, None
    for n, line in enumerate(read(UNIT).splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = out.setdefault(m.group(1), {})
            continue
        check(section is not None and "=" in line,
              "predictd.service:%d: cannot read %r" % (n, line))
        k, _, v = line.partition("=")
        section.setdefault(k.strip(), []).append(v.strip())
    return out


def seconds(text):
    m = re.match(r"^(\d+)(s|min)?$", text)
    check(m is not None, "cannot read the duration %r" % text)
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def local_copy():
    """The unit with ExecStart's binary replaced by the one under test, which
    `systemd-analyze verify` requires to exist; nothing else changes."""
    text = read(UNIT)
    check(("ExecStart=" + EXEC) in text, "ExecStart is not %r" % EXEC)
    d = workdir("unit")
    path = os.path.join(d, "predictd.service")
    with open(path, "w") as f:
        f.write(text.replace("ExecStart=/usr/local/bin/predictd",
                             "ExecStart=" + deploylib.BINARY))
    return path


@test
def systemd_unit_settings():
    u = unit()
    svc, ins = u.get("Service", {}), u.get("Install", {})

    def one(key, want=None):
        v = svc.get(key)
        check(v is not None, "[Service] has no %s=" % key)
        if want is not None:
            eq(v[-1], want, key)
        return v[-1]

    one("Type", "notify")
    one("ExecStart", EXEC)
    one("Restart", "on-failure")
    check(seconds(one("RestartSec")) >= 1, "RestartSec= below 1 s restarts in a tight loop")
    check("ExecReload" not in svc, "ExecReload=: predictd has no reload; restart it instead")
    check("reload" in read(UNIT).lower(), "say in a comment that there is no reload")
    # Above the daemon's drain time, or systemd SIGKILLs requests it may still finish.
    shutdown = int(options()[1]["--shutdown-timeout"])
    stop = seconds(one("TimeoutStopSec"))
    check(shutdown < stop <= shutdown + 30,
          "TimeoutStopSec=%d: want a little above --shutdown-timeout (%d s)" % (stop, shutdown))
    for key, want in [("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                      ("PrivateTmp", "yes"), ("NoNewPrivileges", "yes"), ("PrivateDevices", "yes"),
                      ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"),
                      ("ProtectControlGroups", "yes"), ("LockPersonality", "yes"),
                      ("MemoryDenyWriteExecute", "yes"), ("CapabilityBoundingSet", "")]:
        one(key, want)
    eq(sorted(one("RestrictAddressFamilies").split()), ["AF_INET", "AF_INET6", "AF_UNIX"],
       "RestrictAddressFamilies (AF_UNIX carries READY=1)")
    check("@system-service" in svc.get("SystemCallFilter", []), "SystemCallFilter=@system-service")
    check(any(p.lstrip("-") == "/var/lib/predictd/models" for p in
              " ".join(svc.get("ReadOnlyPaths", [])).split()),
          "ReadOnlyPaths= must hold the model folder /var/lib/predictd/models")
    check(int(one("LimitNOFILE")) > int(options()[1]["--max-connections"]),
          "LimitNOFILE= must exceed --max-connections")
    check(re.search(r"^#\s*MemoryMax=", read(UNIT), re.M), "a commented MemoryMax= line")
    check("multi-user.target" in ins.get("WantedBy", []), "[Install] WantedBy=multi-user.target")


@test
def systemd_analyze_verify():
    if not have("systemd-analyze"):
        raise Skip("systemd-analyze is not installed (Debian package systemd)")
    path = local_copy()
    p = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    ours = [l for l in out.splitlines() if "predictd" in l]
    check(p.returncode == 0 and not ours,
          "systemd-analyze verify (exit %d):\n%s" % (p.returncode, out.strip()))


@test
def systemd_security_exposure():
    """systemd's own rating of the sandbox: 0 (locked down) to 10 (none)."""
    if not have("systemd-analyze"):
        raise Skip("systemd-analyze is not installed (Debian package systemd)")
    path = local_copy()
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", path],
                       capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    if "unrecognized option" in out or "Unknown option" in out:
        raise Skip("this systemd-analyze has no --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out)
    check(m is not None, "no exposure level in:\n%s" % out[-2000:])
    note("systemd-analyze security: exposure %s (0 = fully sandboxed, 10 = none)" % m.group(1))
    check(p.returncode == 0, "exposure %s is above 2.0; a hardening line was dropped?"
          % m.group(1))


class NotifyListener:
    """A datagram socket where a fake systemd collects what the daemon sends."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "predictd-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = os.path.join(workdir("notify"), "notify.sock")
            self.sock.bind(self.env)
        self.sock.setblocking(False)
        self.messages = []

    def poll(self):
        """New messages (each a set of KEY=VALUE lines) since the last poll."""
        new = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            new.append(data.decode("utf-8", "replace"))
        self.messages += new
        return new

    def close(self):
        self.sock.close()


def notify_run(abstract):
    listener = NotifyListener(abstract)
    port = free_port()
    models = [("tiny", TINY), ("gpt2", GPT2_TINY)]
    argv = [deploylib.BINARY, "--host", HOST, "--port", str(port)]
    for name, path in models:
        argv += ["--model", "%s=%s" % (name, path)]
    d = Proc(argv, "notify", env=clean_env({"NOTIFY_SOCKET": listener.env}), port=port)
    try:
        deadline = time.monotonic() + 30 * deploylib.SLOW
        ready_at = None
        while ready_at is None:
            check(time.monotonic() < deadline, "no READY=1 within 30 s; got %r" % listener.messages)
            check(d.alive(), "predictd exited with %s before READY=1:\n%s"
                  % (d.proc.poll(), d.log_tail()))
            for msg in listener.poll():
                if "READY=1" in msg.split("\n"):
                    ready_at = time.monotonic()
                    break
            time.sleep(0.005)
        # systemd starts dependent units the moment READY=1 arrives: by then
        # every model must be loaded and /health must say so.
        r = request(port, "GET", "/health", timeout=5)
        eq((r.status, r.body), (200, b'{"status":"ok"}'), "GET /health right after READY=1")
        log = d.log()
        for name, _ in models:
            check(re.search(r"model %s: .* loaded" % name, log),
                  "READY=1 arrived before model %s was loaded:\n%s" % (name, log))
        before = listener.messages[:-1]
        check(not any("STOPPING=1" in m for m in before), "STOPPING=1 before READY=1: %r" % before)
        r = request(port, "POST", "/predict?text=ready", timeout=10)
        eq(r.status, 200, "POST /predict after READY=1")
        d.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15 * deploylib.SLOW
        while not any("STOPPING=1" in m.split("\n") for m in listener.messages):
            check(time.monotonic() < deadline, "no STOPPING=1 within 15 s of SIGTERM; got %r"
                  % listener.messages)
            listener.poll()
            time.sleep(0.01)
        code = d.wait(15)
        check(code is not None, "predictd did not exit within 15 s of SIGTERM")
        eq(code, 0, "exit code after SIGTERM")
        listener.poll()
        eq(sum(m.count("READY=1") for m in listener.messages), 1, "READY=1 messages")
    finally:
        d.kill()
        listener.close()


@test
def systemd_notify_ready_and_stopping():
    """A fake systemd (NOTIFY_SOCKET, a path): READY=1 once /health is 200,
    STOPPING=1 on SIGTERM, exit 0."""
    notify_run(abstract=False)


@test
def systemd_notify_abstract_socket():
    """The same over an abstract socket ("@name"), which systemd may also use."""
    notify_run(abstract=True)


@test
def no_writable_executable_memory():
    """MemoryDenyWriteExecute=yes kills a process that maps memory writable and
    executable, or makes anonymous memory executable (a JIT). After a request
    to each demo model family, predictd must have no such mapping."""
    d = deploylib.predictd(["--model", "sst2=" + os.path.join(DEMO, "sst2-distilbert-small"),
                            "--model", "gpt2=" + os.path.join(DEMO, "shakespeare-gpt2-small"),
                            "--model", "clip=" + os.path.join(DEMO, "shapes-clip-small")],
                           label="mdwe", env=clean_env())
    eq(d.post("/predict?text=fine").status, 200, "classification")
    eq(d.post("/models/gpt2/generate",
              b'{"inputs": "ROMEO:", "parameters": {"max_new_tokens": 8}}').status, 200,
       "generation")
    eq(d.post("/models/clip/embed", b'{"inputs": ["a red circle"]}').status, 200, "CLIP")
    bad = []
    with open("/proc/%d/maps" % d.pid) as f:
        for line in f:
            parts = line.split()
            perms, path = parts[1], (parts[5] if len(parts) > 5 else "")
            if "w" in perms and "x" in perms:
                bad.append(line.strip())
            elif "x" in perms and (not path or path.startswith("[") and path not in
                                   ("[vdso]", "[vsyscall]")):
                bad.append(line.strip())
    check(not bad, "mappings MemoryDenyWriteExecute=yes forbids:\n" + "\n".join(bad))
    d.stop()
