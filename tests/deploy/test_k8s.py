"""docker/k8s: every manifest parses and the objects refer to each other
correctly; the Deployment's and the InferenceService's containers run here as
local processes and answer their own probes."""

import os
import re

import deploylib
import miniyaml
from deploylib import (DEMO, K8S, Skip, check, container_mapping, eq, image_command, k8s_docs,
                       note, read, run_container, test)

WANT_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
              "ConfigMap", "PersistentVolumeClaim", "InferenceService"}


def one(docs, kind):
    found = [(d, p) for (k, _), (d, p) in docs.items() if k == kind]
    eq(len(found), 1, "%s objects in docker/k8s" % kind)
    return found[0][0]


def container(pod_spec, name=None):
    cs = pod_spec["containers"]
    if name:
        cs = [c for c in cs if c["name"] == name]
    eq(len(cs), 1, "containers")
    return cs[0]


def env_of(c, limits=None):
    """The container's env as strings; a resourceFieldRef is resolved from its
    limits as the kubelet would (CPU rounded up to whole cores)."""
    out = {}
    for e in c.get("env", []):
        if "value" in e:
            out[e["name"]] = str(e["value"])
            continue
        ref = e.get("valueFrom", {}).get("resourceFieldRef")
        check(ref is not None, "env %s: only value and resourceFieldRef are understood here"
              % e["name"])
        eq(ref.get("containerName", c["name"]), c["name"], "env %s containerName" % e["name"])
        res = ref["resource"]
        check(res.startswith("limits.") and res.split(".", 1)[1] in c["resources"]["limits"],
              "env %s: %s is not among the container's limits" % (e["name"], res))
        value = str(c["resources"]["limits"][res.split(".", 1)[1]])
        if res == "limits.cpu":
            cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
            value = str(max(1, -int(-cores // 1)))
        out[e["name"]] = value
    return out


def port_of(c, ref):
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(ref, int):
        return ref
    named = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == ref]
    check(named, "port %r is not a named port of container %s" % (ref, c["name"]))
    return named[0]


@test
def k8s_manifests_parse():
    """Every file parses; the expected kinds are there with their API versions."""
    docs = k8s_docs()
    kinds = {k for k, _ in docs}
    missing = WANT_KINDS - kinds
    check(not missing, "docker/k8s lacks %s" % sorted(missing))
    versions = {k: d["apiVersion"] for (k, _), (d, _) in docs.items()}
    eq(versions["Deployment"], "apps/v1", "Deployment apiVersion")
    eq(versions["HorizontalPodAutoscaler"], "autoscaling/v2", "HPA apiVersion")
    eq(versions["PodDisruptionBudget"], "policy/v1", "PDB apiVersion")
    eq(versions["InferenceService"], "serving.kserve.io/v1beta1", "InferenceService apiVersion")
    adapter = one(docs, "ConfigMap")
    inner = deploylib.parse_yaml(adapter["data"]["config.yaml"],
                                 "prometheus-adapter ConfigMap config.yaml")
    rules = inner[0]["rules"]
    check(any("predictd_queue_size" in r["seriesQuery"] and r["name"]["as"] ==
              "predictd_queue_size" for r in rules),
          "the adapter ConfigMap has no rule serving predictd_queue_size")


@test
def yaml_reader_agrees():
    """tests/deploy/miniyaml.py (used where PyYAML is missing) reads every
    deployment file, and a corpus of YAML forms, as PyYAML does."""
    if deploylib._pyyaml is None:
        raise Skip("PyYAML is not installed: nothing to compare miniyaml with")
    yaml = deploylib._pyyaml
    paths = [os.path.join(K8S, n) for n in sorted(os.listdir(K8S)) if n.endswith(".yaml")]
    paths.append(os.path.join(deploylib.DOCKER, "compose.yaml"))
    corpus = [read(p) for p in paths]
    corpus.append("""a: 1
b: -2.5
c: "x: y # not a comment"
d: 'it''s'
e: [1, "two", {k: v}, []]
f:
- x
- - nested
  - seq
- k: v
  k2:
    deep: true
g: |
  line one
    indented
  last
h: >-
  folded
  text
i: ~
j: yes
k: 0.0.0.0
l: "\\u00e9\\t"
m: 10s
--- 
second: doc
""")
    for p, text in zip(paths + ["corpus"], corpus):
        eq(miniyaml.load_all(text, p), [d for d in yaml.safe_load_all(text) if d is not None],
           "miniyaml vs PyYAML on %s" % deploylib.rel(p) if p != "corpus" else "corpus")


@test
def k8s_objects_wired():
    docs = k8s_docs()
    dep = one(docs, "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in sel.items()), "the Deployment's selector does "
          "not match its pods' labels")
    pod = dep["spec"]["template"]["spec"]
    c = container(pod)
    env = env_of(c)
    deploylib.check_env_names(env, "Deployment env")
    deploylib.check_args(c.get("args", []), "Deployment args")
    check("command" not in c, "use the image's ENTRYPOINT (no command:)")
    _, img_env, _ = image_command()
    # Probes: /health, on the container's port; startup covers model loading.
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        pr = c.get(kind)
        check(pr is not None, "the container has no %s" % kind)
        eq(pr["httpGet"]["path"], "/health", "%s path" % kind)
        eq(port_of(c, pr["httpGet"]["port"]), int(env["PREDICTD_PORT"]), "%s port" % kind)
    window = lambda p: p.get("periodSeconds", 10) * p.get("failureThreshold", 3)  # noqa: E731
    check(c["livenessProbe"].get("failureThreshold", 3) > c["readinessProbe"].get(
        "failureThreshold", 3), "liveness must tolerate more failures than readiness")
    check(window(c["startupProbe"]) >= 120, "the startupProbe allows under 2 minutes to load")
    # Termination: preStop + drain fit in the grace period.
    shutdown = int(env.get("PREDICTD_SHUTDOWN_TIMEOUT",
                           deploylib.options()[1]["--shutdown-timeout"]))
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    grace = pod["terminationGracePeriodSeconds"]
    check(grace > shutdown + pre_s, "terminationGracePeriodSeconds %d is not above preStop "
          "(%d s) + the shutdown timeout (%d s)" % (grace, pre_s, shutdown))
    # Security: non-root as the image's user, read-only root.
    user = [i for i in deploylib.dockerfile()[-1][1] if i.keyword == "USER"][-1].args
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "runAsNonRoot: true")
    eq(str(psc.get("runAsUser", csc.get("runAsUser"))), user.split(":")[0],
       "runAsUser vs the Dockerfile's USER")
    eq(csc.get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem")
    eq(csc.get("allowPrivilegeEscalation"), False, "allowPrivilegeEscalation")
    for r in ("cpu", "memory"):
        check(r in c["resources"]["requests"] and r in c["resources"]["limits"],
              "resources requests and limits for %s" % r)
    # The models volume, read-only, where PREDICTD_MODEL looks.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    models = [m for m in mounts.values() if m["mountPath"] == "/models"]
    eq(len(models), 1, "volume mounts at /models")
    eq(models[0].get("readOnly"), True, "the models mount is readOnly")
    vol = vols[models[0]["name"]]
    pvc = one(docs, "PersistentVolumeClaim")
    eq(vol.get("persistentVolumeClaim", {}).get("claimName"), pvc["metadata"]["name"],
       "the models volume's claimName")
    model_env = env.get("PREDICTD_MODEL", img_env.get("PREDICTD_MODEL", ""))
    for item in model_env.split(","):
        check(item.split("=", 1)[-1].startswith("/models/"), "PREDICTD_MODEL %s is not on the "
              "models volume" % item)
    # Service, PDB and HPA point at the Deployment and its pods.
    svc = one(docs, "Service")
    check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
          "the Service's selector does not match the pods")
    for p in svc["spec"]["ports"]:
        eq(port_of(c, p["targetPort"]), int(env["PREDICTD_PORT"]), "Service targetPort")
    pdb = one(docs, "PodDisruptionBudget")
    check(all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()),
          "the PDB's selector does not match the pods")
    hpa = one(docs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    eq((ref["kind"], ref["name"]), ("Deployment", dep["metadata"]["name"]), "HPA scaleTargetRef")
    check(hpa["spec"]["minReplicas"] >= 2, "HPA minReplicas >= 2 (the PDB and rolling updates "
          "need a second pod)")
    metrics = hpa["spec"]["metrics"]
    pods = [m for m in metrics if m["type"] == "Pods"]
    check(pods and pods[0]["pods"]["metric"]["name"] == "predictd_queue_size",
          "the HPA must scale on the Pods metric predictd_queue_size")
    eq(pods[0]["pods"]["target"]["type"], "AverageValue", "HPA target type")
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    eq(ann.get("prometheus.io/path"), "/metrics", "prometheus.io/path")


def probe_and_metrics(p, c, mapping_note):
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = c[kind]["httpGet"]["path"]
        r = p.get(path)
        if r.status == 404 and path.startswith("/v2/"):
            raise Skip("this build of predictd does not serve %s yet (KServe v2 endpoints)"
                       % path)
        eq(r.status, 200, "%s %s (%s)" % (kind, path, mapping_note))


@test
def k8s_deployment_container_runs():
    """The Deployment's container (image ENTRYPOINT, its args and env, CPU
    limit resolved) serves here; its probes answer 200; /metrics exports the
    HPA's metric predictd_queue_size from start-up, before any request (the
    adapter rule has no fallback for a pod without the series)."""
    docs = k8s_docs()
    dep = one(docs, "Deployment")
    c = container(dep["spec"]["template"]["spec"])
    argv, env, _ = image_command()
    argv = argv[:1] + list(c.get("args", argv[1:]))
    env.update(env_of(c))
    p, _ = run_container(argv, env, container_mapping(), "k8s-deployment")
    p.wait_healthy(60)
    probe_and_metrics(p, c, "Deployment")
    text = p.get("/metrics").body.decode()
    check(re.search(r'^predictd_queue_size\{model="[^"]+"\} 0$', text, re.M),
          "/metrics has no predictd_queue_size{model=...} 0 sample before any request")
    eq(p.post("/predict?text=scaling").status, 200, "POST /predict")
    check(re.search(r"^# TYPE predictd_queue_size gauge$", text, re.M),
          "predictd_queue_size must be a gauge (the adapter rule takes no rate())")
    p.stop()


@test
def kserve_container_runs():
    """The InferenceService's predictor (image ENTRYPOINT + its args; the
    storage initializer's /mnt/models being the folder STORAGE_URI names)
    serves here, its probes answer 200 and /v2/models/NAME/infer classifies."""
    docs = k8s_docs()
    isvc = one(docs, "InferenceService")
    c = container(isvc["spec"]["predictor"], "kserve-container")
    env = env_of(c)
    deploylib.check_env_names(env, "InferenceService env")
    deploylib.check_args(c.get("args", []), "InferenceService args")
    uri = env.get("STORAGE_URI") or isvc["spec"]["predictor"].get("model", {}).get("storageUri")
    check(uri, "no STORAGE_URI / storageUri")
    folder = uri.rstrip("/").rsplit("/", 1)[-1]
    local = os.path.join(DEMO, folder)
    check(os.path.isdir(local), "STORAGE_URI's folder %s is not a demo model" % folder)
    argv, img_env, _ = image_command()
    argv = argv[:1] + list(c["args"])
    img_env.update(env)
    names = [a.split("=", 1)[0] for a in c["args"] if "=/mnt/models" in a]
    eq(len(names), 1, "models served from /mnt/models")
    p, _ = run_container(argv, img_env, [("/usr/local/bin/predictd", deploylib.BINARY),
                                         ("/mnt/models", local)], "kserve")
    p.wait_healthy(60)
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = c[kind]["httpGet"]["path"]
        check(names[0] in path or "/models/" not in path,
              "%s %s names a model that is not served" % (kind, path))
    probe_and_metrics(p, c, "InferenceService")
    r = p.post("/v2/models/%s/infer" % names[0],
               b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", '
               b'"data": ["a gripping, beautifully acted film"]}]}')
    eq(r.status, 200, "POST /v2/models/%s/infer (%r)" % (names[0], r.body[:300]))
    note("v2 infer answer: %s" % r.body[:200].decode("utf-8", "replace"))
    p.stop()
