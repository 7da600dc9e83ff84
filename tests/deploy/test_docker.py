"""docker/Dockerfile without a Docker engine: the runtime packages hold every
library the binary loads, the build stage's sources and packages build it, the
image's command line serves the demo models, and lint-style checks."""

import base64
import glob
import os
import re
import shutil
import subprocess

import deploylib
from deploylib import (DEMO, Skip, apt_packages, check, container_mapping, dockerfile, eq, fail,
                       have, image_command, note, read, rel, run_container, test, workdir)


def stage_packages(instructions):
    pkgs = []
    for ins in instructions:
        if ins.keyword == "RUN":
            pkgs += apt_packages(ins.args)
    return pkgs


def lib_packages(binary):
    """{library path: Debian package} of every library `ldd binary` resolves."""
    out = subprocess.run(["ldd", binary], capture_output=True, timeout=30).stdout.decode()
    libs = {}
    for line in out.splitlines():
        m = re.match(r"^\s*(\S+) => (\S+) \(", line)
        if m:
            libs[m.group(2)] = None
        elif "not found" in line:
            fail("ldd: %s" % line.strip())
    # One dpkg -S for all: a library reached through an alternatives symlink
    # (libopenblas.so.0) is owned under its real path.
    paths = sorted(set(libs) | {os.path.realpath(p) for p in libs})
    p = subprocess.run(["dpkg", "-S"] + paths, capture_output=True, timeout=60)
    owner = {}
    for line in p.stdout.decode().splitlines():
        pkgs, _, path = line.partition(": ")
        owner[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    for path in libs:
        libs[path] = owner.get(path) or owner.get(os.path.realpath(path))
        check(libs[path] is not None, "no Debian package owns %s" % path)
    return libs


def depends_closure(pkgs):
    """pkgs and everything they depend on, transitively, among installed packages."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Depends}, ${Pre-Depends}\n"],
                         capture_output=True, timeout=60).stdout.decode()
    deps = {}
    for line in out.splitlines():
        name, _, rest = line.partition("\t")
        deps[name] = [c.strip().split(" ")[0].split(":")[0]
                      for alt in rest.split(",") for c in alt.split("|") if c.strip()]
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += deps.get(p, [])
    return seen


@test
def docker_runtime_libraries():
    """Every library `ldd build/predictd` resolves comes from a package the
    runtime stage installs, or from one of their dependencies; each library
    the binary names itself (NEEDED) is installed by name; nothing extra."""
    if not have("dpkg") or not have("ldd"):
        raise Skip("needs dpkg and ldd (a Debian machine)")
    stages = dockerfile()
    runtime = stage_packages(stages[-1][1])
    check(runtime, "the runtime stage installs no packages")
    libs = lib_packages(deploylib.BINARY)
    closure = depends_closure(runtime)
    missing = {lib: pkg for lib, pkg in libs.items() if pkg not in closure}
    check(not missing, "libraries the runtime stage does not install: %s" % missing)
    objdump = subprocess.run(["objdump", "-p", deploylib.BINARY], capture_output=True,
                             timeout=30).stdout.decode() if have("objdump") else ""
    needed = re.findall(r"^\s*NEEDED\s+(\S+)$", objdump, re.M)
    direct = set()
    for soname in needed:
        pkg = [p for lib, p in libs.items() if os.path.basename(lib) == soname]
        check(pkg, "NEEDED %s is not in ldd's list" % soname)
        direct.add(pkg[0])
    # libc6 (libc, libm) is in every Debian image.
    unnamed = sorted(direct - set(runtime) - {"libc6"})
    check(not unnamed, "the runtime stage should install these by name, not by luck of "
          "dependencies: %s" % unnamed)
    unused = sorted(set(runtime) - set(libs.values()))
    check(not unused, "runtime packages no library of the binary comes from: %s" % unused)
    note("runtime packages: %s" % " ".join(runtime))
    note("NEEDED by package: %s" % ", ".join(
        "%s=%s" % (s, p) for s, p in zip(needed, [
            [q for lib, q in libs.items() if os.path.basename(lib) == s][0] for s in needed])))


@test
def docker_build_packages():
    """The build stage installs scripts/install-deps.sh's build packages."""
    text = read(os.path.join(deploylib.REPO, "scripts", "install-deps.sh"))
    m = re.search(r'^build="([^"]*)"', text, re.M)
    check(m is not None, "cannot find build=\"...\" in scripts/install-deps.sh")
    missing = sorted(set(m.group(1).split()) - set(stage_packages(dockerfile()[0][1])))
    check(not missing, "the build stage lacks install-deps.sh's %s" % missing)


@test
def docker_build_stage_sources():
    """The build stage's COPY lines bring every source the build needs: copy
    exactly those into an empty folder and run the stage's make there."""
    if os.environ.get("PREDICTD_DEPLOY_QUICK"):
        raise Skip("PREDICTD_DEPLOY_QUICK is set (this test builds predictd, about 40 s)")
    stage = dockerfile()[0][1]
    root = workdir("build-stage")
    cwd = root
    commands = []
    for ins in stage:
        if ins.keyword == "WORKDIR":
            cwd = os.path.join(root, ins.args.lstrip("/"))
            os.makedirs(cwd, exist_ok=True)
        elif ins.keyword == "COPY":
            check("--from" not in ins.args, "the build stage copies from another stage")
            words = ins.args.split()
            srcs, dest = words[:-1], words[-1]
            target = os.path.join(cwd, dest) if not dest.startswith("/") else \
                os.path.join(root, dest.lstrip("/"))
            for src in srcs:
                matches = glob.glob(os.path.join(deploylib.REPO, src))
                check(matches, "Dockerfile:%d: COPY %s matches nothing" % (ins.line, src))
                for mpath in matches:
                    if os.path.isdir(mpath):
                        shutil.copytree(mpath, target if dest.endswith("/") and len(srcs) == 1
                                        else os.path.join(target, os.path.basename(mpath)),
                                        dirs_exist_ok=True)
                    else:
                        os.makedirs(target if dest.endswith("/") else os.path.dirname(target),
                                    exist_ok=True)
                        shutil.copy2(mpath, target if not dest.endswith("/") else
                                     os.path.join(target, os.path.basename(mpath)))
        elif ins.keyword == "RUN" and "apt-get" not in ins.args:
            commands.append((ins, cwd))
    check(commands, "the build stage runs no build command")
    for ins, where in commands:
        p = subprocess.run(["sh", "-c", ins.args], cwd=where, capture_output=True,
                           timeout=600)
        check(p.returncode == 0, "Dockerfile:%d: `%s` failed in a folder holding only the "
              "COPY'd files (a source folder missing from COPY?):\n%s"
              % (ins.line, ins.args, (p.stdout + p.stderr).decode("utf-8", "replace")[-3000:]))
    final = [i for i in dockerfile()[-1][1] if i.keyword == "COPY" and "--from=build" in i.args]
    check(final, "the runtime stage copies nothing from the build stage")
    src = final[0].args.split()[1]
    built = os.path.join(root, src.lstrip("/"))
    check(os.path.exists(built), "the build stage did not make %s" % src)
    out = subprocess.run([built, "--version"], capture_output=True, timeout=30).stdout.decode()
    check(out.startswith("predictd "), "the built binary's --version: %r" % out)


def demo_requests(p):
    """The three demo models answer, each through its own endpoint."""
    r = p.get("/models")
    eq(r.status, 200, "GET /models")
    names = sorted(m["name"] for m in r.json()["models"])
    eq(names, ["shakespeare", "shapes", "sst2"], "models served")
    r = p.post("/predict?text=a%20gripping,%20beautifully%20acted%20film")
    eq(r.status, 200, "POST /predict")
    eq(r.json()[0]["label"], "POSITIVE", "the demo classifier's label")
    r = p.post("/models/shakespeare/generate",
               b'{"inputs": "ROMEO:", "parameters": {"do_sample": false, "max_new_tokens": 8}}')
    eq(r.status, 200, "POST /models/shakespeare/generate")
    img = os.path.join(DEMO, "shapes-clip-small", "examples", "red_circle.png")
    with open(img, "rb") as f:
        b64 = base64.b64encode(f.read()).decode()
    r = p.post("/models/shapes/predict", ('{"inputs": "%s", "parameters": {"candidate_labels": '
                                          '["red circle", "blue square"]}}' % b64).encode())
    eq(r.status, 200, "POST /models/shapes/predict")
    eq(r.json()[0]["label"], "red circle", "the demo CLIP's top label")


def run_healthcheck(hc, env):
    p = subprocess.run(hc, env=env, capture_output=True, timeout=10)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


@test
def docker_entrypoint_serves_demo_models():
    """ENTRYPOINT + CMD with the image's ENV, run here with /models mapped to
    models/demo and the port moved to a free one, serves all three demo
    models; the HEALTHCHECK command passes against it and fails without it."""
    argv, env, hc = image_command()
    deploylib.check_args(argv[1:], "Dockerfile CMD")
    deploylib.check_env_names(env, "Dockerfile ENV")
    eq(env.get("PREDICTD_HOST"), "0.0.0.0", "ENV PREDICTD_HOST (a container must listen "
       "beyond its own loopback)")
    p, full_env = run_container(argv, env, container_mapping(), "image")
    p.wait_healthy(60)
    demo_requests(p)
    check(hc is not None and hc[0] in ("bash", "/bin/bash", "sh", "/bin/sh"),
          "HEALTHCHECK must be CMD [\"bash\", \"-c\", ...] (the image has no curl): %r" % hc)
    code, out = run_healthcheck(hc, full_env)
    eq(code, 0, "the HEALTHCHECK command against a healthy daemon (%s)" % out)
    p.stop()
    code, out = run_healthcheck(hc, full_env)
    check(code != 0, "the HEALTHCHECK command passed with no daemon running")


@test
def docker_lint():
    """What hadolint would say, by reading the Dockerfile."""
    stages = dockerfile()
    text = read(os.path.join(deploylib.DOCKER, "Dockerfile"))
    for frm, _ in stages:
        image = frm.args.split()[0]
        check(":" in image and not image.endswith(":latest"),
              "Dockerfile:%d: FROM %s: pin a tag, never latest" % (frm.line, image))
        check(image.startswith("debian:bookworm"), "Dockerfile:%d: both stages on "
              "debian:bookworm-slim (the binary links bookworm's libraries)" % frm.line)
    check(re.search(r"^\s*ADD\s", text, re.M) is None, "use COPY, not ADD")
    for frm, instructions in stages:
        for ins in instructions:
            if ins.keyword == "RUN" and "apt-get install" in ins.args:
                check("apt-get update" in ins.args, "Dockerfile:%d: apt-get update in the same "
                      "RUN as install, or a cached old index installs stale versions" % ins.line)
                check("--no-install-recommends" in ins.args,
                      "Dockerfile:%d: apt-get install --no-install-recommends" % ins.line)
                check(re.search(r"\s-y\b|--yes|--assume-yes", ins.args),
                      "Dockerfile:%d: apt-get install -y" % ins.line)
                check("rm -rf /var/lib/apt/lists/*" in ins.args,
                      "Dockerfile:%d: clean the apt lists in the same RUN" % ins.line)
            check("sudo " not in ins.args, "Dockerfile:%d: no sudo in an image" % ins.line)
    final = stages[-1][1]
    users = [i for i in final if i.keyword == "USER"]
    check(users, "the final stage must set USER (a non-root user)")
    user = users[-1].args.split(":")[0]
    check(user not in ("root", "0"), "USER %s is root" % user)
    check(user.isdigit(), "USER %s: numeric, so Kubernetes' runAsNonRoot can verify it" % user)
    last_user = max(final.index(i) for i in users)
    entry = [i for i in final if i.keyword == "ENTRYPOINT"][0]
    check(final.index(entry) > last_user, "USER before ENTRYPOINT")
    stop = [i for i in final if i.keyword == "STOPSIGNAL"]
    check(stop and stop[-1].args == "SIGTERM", "STOPSIGNAL SIGTERM")
    hc = [i for i in final if i.keyword == "HEALTHCHECK"]
    check(hc and "/health" in hc[-1].args, "a HEALTHCHECK on /health")
    for opt in ("--interval", "--timeout", "--start-period", "--retries"):
        check(opt in hc[-1].args, "HEALTHCHECK %s" % opt)
    for i in final:
        if i.keyword == "WORKDIR":
            check(i.args.startswith("/"), "Dockerfile:%d: WORKDIR must be absolute" % i.line)
    _, env, hc_argv = image_command()
    if have("shellcheck"):
        for argv, what in [(hc_argv, "HEALTHCHECK")]:
            script = argv[-1]
            p = subprocess.run(["shellcheck", "-s", "bash", "-"], input=script.encode(),
                               capture_output=True, timeout=30)
            check(p.returncode == 0, "shellcheck on the %s script:\n%s"
                  % (what, p.stdout.decode()))
        scripts = [os.path.join(deploylib.DOCKER, n) for n in os.listdir(deploylib.DOCKER)
                   if n.endswith(".sh")]
        scripts += [os.path.join(deploylib.HERE, n) for n in os.listdir(deploylib.HERE)
                    if n.endswith(".sh")]
        p = subprocess.run(["shellcheck"] + scripts, capture_output=True, timeout=60)
        check(p.returncode == 0, "shellcheck %s:\n%s" % (" ".join(rel(s) for s in scripts),
                                                         p.stdout.decode()))
    else:
        note("shellcheck not installed: shell scripts not linted")
