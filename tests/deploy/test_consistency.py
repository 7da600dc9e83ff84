"""One port, one image, one metric everywhere: a change made in one
deployment file only fails here, naming every place that disagrees."""

import json
import os
import re
import subprocess

import deploylib
from deploylib import (DOCKER, check, dockerfile, docker_env, fail, image_command, k8s_docs,
                       read, test)


def _k8s_container_ports(docs, where, c, annotations):
    out = []
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    named = {}
    for p in c.get("ports", []):
        out.append(("%s containerPort" % where, p["containerPort"]))
        if p.get("name"):
            named[p["name"]] = p["containerPort"]
    if "PREDICTD_PORT" in env:
        out.append(("%s env PREDICTD_PORT" % where, env["PREDICTD_PORT"]))
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = c.get(kind, {}).get("httpGet", {}).get("port")
        if port is not None:
            out.append(("%s %s port" % (where, kind), named.get(port, port)))
    if "prometheus.io/port" in annotations:
        out.append(("%s annotation prometheus.io/port" % where, annotations["prometheus.io/port"]))
    return out, named


def port_references():
    """[(where, port)] for every place a deployment file names predictd's port."""
    refs = []
    final = dockerfile()[-1][1]
    env = docker_env(final)
    refs.append(("Dockerfile ENV PREDICTD_PORT", env.get("PREDICTD_PORT")))
    for ins in final:
        if ins.keyword == "EXPOSE":
            refs += [("Dockerfile EXPOSE", p.split("/")[0]) for p in ins.args.split()]
        if ins.keyword == "HEALTHCHECK":
            m = re.search(r"PREDICTD_PORT:-(\d+)", ins.args)
            check(m, "the HEALTHCHECK should read ${PREDICTD_PORT:-...}")
            refs.append(("Dockerfile HEALTHCHECK default", m.group(1)))
    compose = deploylib.load_yaml(os.path.join(DOCKER, "compose.yaml"))[0]
    for name, svc in compose["services"].items():
        if not name.startswith("predictd"):
            continue
        e = svc.get("environment", {})
        refs.append(("compose %s PREDICTD_PORT" % name, e.get("PREDICTD_PORT")))
        refs += [("compose %s expose" % name, p) for p in svc.get("expose", [])]
        for a in svc.get("healthcheck", {}).get("test", []):
            for p in re.findall(r"/dev/tcp/[\d.]+/(\d+)", a):
                refs.append(("compose %s healthcheck" % name, p))
    site = read(deploylib.NGINX_CONF)
    refs += [("nginx.conf upstream %s" % h, p)
             for h, p in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", site, re.M)]
    docs = k8s_docs()
    for (kind, name), (doc, path) in docs.items():
        where = "%s %s/%s" % (os.path.basename(path), kind, name)
        if kind == "Deployment":
            tmpl = doc["spec"]["template"]
            for c in tmpl["spec"]["containers"]:
                r, named = _k8s_container_ports(docs, where, c, tmpl["metadata"].get(
                    "annotations", {}))
                refs += r
                for (k2, n2), (svc, p2) in docs.items():
                    if k2 == "Service":
                        for sp in svc["spec"]["ports"]:
                            refs.append(("%s Service/%s targetPort" % (os.path.basename(p2), n2),
                                         named.get(sp["targetPort"], sp["targetPort"])))
        if kind == "InferenceService":
            for c in doc["spec"]["predictor"]["containers"]:
                r, _ = _k8s_container_ports(docs, where, c, doc["metadata"].get(
                    "annotations", {}))
                refs += r
    return refs


@test
def one_port_everywhere():
    refs = port_references()
    ports = {}
    for where, port in refs:
        check(port is not None, "%s: no port set" % where)
        try:
            ports.setdefault(int(port), []).append(where)
        except ValueError:
            fail("%s: %r is not a port number" % (where, port))
    check(len(refs) >= 15, "found only %d port references; is the parser lost?" % len(refs))
    if len(ports) != 1:
        fail("the deployment files disagree on predictd's port:\n" + "\n".join(
            "  %d: %s" % (p, ", ".join(w)) for p, w in sorted(ports.items())))


@test
def one_image_everywhere():
    """The same image name and tag in compose and Kubernetes, and the tag is
    the daemon's version (predictd --version)."""
    version = subprocess.run([deploylib.BINARY, "--version"], capture_output=True,
                             timeout=10).stdout.decode().split()[-1]
    want = "predictd:%s" % version
    images = []
    compose = deploylib.load_yaml(os.path.join(DOCKER, "compose.yaml"))[0]
    for name, svc in compose["services"].items():
        if name.startswith("predictd"):
            images.append(("compose %s" % name, svc["image"]))
    for (kind, name), (doc, path) in k8s_docs().items():
        spec = doc["spec"]["template"]["spec"] if kind == "Deployment" else \
            doc["spec"]["predictor"] if kind == "InferenceService" else None
        if spec:
            images += [("%s %s/%s" % (os.path.basename(path), kind, name), c["image"])
                       for c in spec["containers"]]
    text = read(os.path.join(DOCKER, "Dockerfile"))
    images += [("Dockerfile usage comment", m) for m in re.findall(r"-t (predictd:\S+)", text)]
    bad = ["%s: %s" % (w, i) for w, i in images if i != want]
    check(not bad, "want image %s (the daemon's version) everywhere:\n  %s"
          % (want, "\n  ".join(bad)))


@test
def same_models_everywhere():
    """The image, compose and the Deployment serve the same demo models under
    the same names (so the README's curl commands work against any of them)."""
    _, env, _ = image_command()
    want = env["PREDICTD_MODEL"]
    compose = deploylib.load_yaml(os.path.join(DOCKER, "compose.yaml"))[0]
    got = [("compose %s" % n, s["environment"]["PREDICTD_MODEL"])
           for n, s in compose["services"].items() if n.startswith("predictd")]
    for (kind, name), (doc, path) in k8s_docs().items():
        if kind == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                e = {x["name"]: x.get("value") for x in c.get("env", [])}
                got.append(("%s Deployment/%s" % (os.path.basename(path), name),
                            e.get("PREDICTD_MODEL", want)))
    bad = ["%s: %s" % (w, v) for w, v in got if v != want]
    check(not bad, "want PREDICTD_MODEL=%s (the Dockerfile's):\n  %s" % (want, "\n  ".join(bad)))
    example = deploylib.read(os.path.join(deploylib.REPO, "config", "predictd.example.json"))
    names = [m["name"] for m in json.loads(example)["models"]]
    check([i.split("=")[0] for i in want.split(",")] == names,
          "the image's model names %s differ from config/predictd.example.json's %s"
          % (want, names))


@test
def one_nginx_port_everywhere():
    """nginx's listen port, compose's published container port and nginx's
    healthcheck agree."""
    refs = [("nginx.conf listen", p) for p in
            re.findall(r"^\s*listen\s+(\d+)\s*;", read(deploylib.NGINX_CONF), re.M)]
    compose = deploylib.load_yaml(os.path.join(DOCKER, "compose.yaml"))[0]
    ng = compose["services"]["nginx"]
    refs += [("compose nginx ports (container side)", str(p).rsplit(":", 1)[-1])
             for p in ng.get("ports", [])]
    for a in ng.get("healthcheck", {}).get("test", []):
        refs += [("compose nginx healthcheck", p) for p in re.findall(r"127\.0\.0\.1:(\d+)/", a)]
    check(len(refs) >= 3, "found only %r" % refs)
    ports = {int(p) for _, p in refs}
    check(len(ports) == 1, "nginx's port differs: %s" % refs)
