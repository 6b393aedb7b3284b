#!/usr/bin/env python3
"""Checks the Helm chart offline with the real Helm engine (helm-python-sdk) and the real
Kubernetes schemas (kubernetes-validate), then feeds every configuration it renders to the
binaries' own `--check`.

    check_chart.py CHART BIN_DIR REFUSED_DIR

For the default values and each CHART/ci/*-values.yaml: lint (strict), render, validate every
manifest with `kubernetes-validate --strict`, check what the chart promises (probes, security,
Services, checksum, the cluster's table, environment, ports and peer Service), then lay out
each Deployment's volumes as the kubelet would (ConfigMap and Secret files, the projected
volume's mode) in a temporary root and run the container's own command and arguments, with
its environment (downward API values made up, `$(VAR)` expanded), with `--check`. Each REFUSED_DIR/*.yaml must be refused at render with a
message containing its `# expect:` line. Exits non-zero, naming what failed, on any problem.
"""

import copy
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

import helm_python as helm
import yaml

RELEASE, NAMESPACE = "edge", "tunnel"
CREDENTIALS = "/etc/tunnel/credentials"
# What the downward API would give a pod (TEST-NET-1, never routed).
POD_FIELDS = {"status.podIP": "192.0.2.17", "metadata.name": "edge-tunnel-server-5d8f7c9b4-x7k2p"}
# What the operator's Secrets hold, for the environment a pod gets from them.
SECRET_VALUES = {("tunnel-redis", "redis-url"): "rediss://:redis-password-5e1b@redis.example.net:6380/2"}
failures = []


def fail(case, message):
    failures.append(f"{case}: {message}")
    print(f"FAIL {case}: {message}", file=sys.stderr)


def render(chart, values):
    """The rendered manifests as (template, document) pairs, NOTES.txt and empty ones left out."""
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((template, doc))
    return docs


def kubernetes_validate(case, docs, workdir):
    path = pathlib.Path(workdir) / f"{case}.yaml"
    path.write_text(yaml.safe_dump_all([d for _, d in docs]))
    venv_bin = pathlib.Path(sys.executable).parent
    run = subprocess.run(
        [str(venv_bin / "kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True
    )
    output = run.stdout + run.stderr
    for line in output.splitlines():
        # ServiceMonitor is a CRD of the Prometheus Operator: no schema in kubernetes-validate;
        # check_service_monitor checks what it refers to.
        if "Couldn't find schema" in line and "kind ServiceMonitor" not in line:
            fail(case, f"not validated: {line}")
        elif " ERROR " in f" {line} ":
            fail(case, line)
    if run.returncode != 0:
        fail(case, f"kubernetes-validate --strict exited {run.returncode}:\n{output}")


def kinds(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def by_name(docs, kind, name):
    found = [d for d in kinds(docs, kind) if d["metadata"]["name"] == name]
    return found[0] if found else None


def check_pods(case, docs, values):
    for deploy in kinds(docs, "Deployment"):
        name = deploy["metadata"]["name"]
        pod = deploy["spec"]["template"]["spec"]
        annotations = deploy["spec"]["template"]["metadata"].get("annotations", {})
        if "checksum/config" not in annotations:
            fail(case, f"{name}: no checksum/config annotation")
        if pod["securityContext"].get("runAsNonRoot") is not True:
            fail(case, f"{name}: the pod may run as root")
        for c in pod["containers"]:
            sc = c["securityContext"]
            if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False):
                fail(case, f"{name}: container {c['name']} is not non-root with a read-only root")
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"]:
                fail(case, f"{name}: capabilities not all dropped: {caps}")
            low = [p["containerPort"] for p in c["ports"] if p["containerPort"] < 1024]
            if caps.get("add", []) != (["NET_BIND_SERVICE"] if low else []):
                fail(case, f"{name}: capabilities added {caps.get('add')} with ports below 1024 {low}")
            probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("livenessProbe", "readinessProbe", "startupProbe")}
            if probes["livenessProbe"].get("path") != "/healthz":
                fail(case, f"{name}: liveness must be /healthz alone, not {probes['livenessProbe']}")
            if probes["readinessProbe"].get("path") != "/readyz":
                fail(case, f"{name}: readiness must be /readyz, not {probes['readinessProbe']}")
            if not probes["startupProbe"]:
                fail(case, f"{name}: no startup probe")
            if any(p["port"] != "admin" for p in probes.values()):
                fail(case, f"{name}: a probe not on the admin port: {probes}")
        replicas = deploy["spec"]["replicas"]
        if replicas > 1 and name.endswith("-server") and not pod.get("topologySpreadConstraints"):
            fail(case, f"{name}: {replicas} replicas without topology spread")
    for svc in kinds(docs, "Service"):
        admin = [p for p in svc["spec"]["ports"] if p.get("targetPort") == "admin"]
        public = svc["spec"].get("type") != "ClusterIP"
        if admin and (public or svc["metadata"]["labels"].get("tunnel.admin/scrape") != "true"):
            fail(case, f"Service {svc['metadata']['name']} exposes the admin port")
        if public and svc["spec"].get("externalTrafficPolicy") != "Local" and values.get("server", {}).get("service", {}).get("externalTrafficPolicy", "Local") == "Local":
            fail(case, f"Service {svc['metadata']['name']} loses the visitors' source addresses")
    if values.get("server", {}).get("enabled", True) and not kinds(docs, "PodDisruptionBudget"):
        fail(case, "no PodDisruptionBudget for the server")


def check_service_monitor(case, docs):
    for sm in kinds(docs, "ServiceMonitor"):
        wanted = sm["spec"]["selector"]["matchLabels"]
        ports = {e["port"] for e in sm["spec"]["endpoints"]}
        matched = [
            s for s in kinds(docs, "Service")
            if wanted.items() <= s["metadata"]["labels"].items()
            and ports <= {p["name"] for p in s["spec"]["ports"]}
        ]
        if not matched:
            fail(case, f"ServiceMonitor selects no Service with ports {ports}")


def secret_files(docs, name, items):
    """The files of Secret `name` (rendered, or made up for one the operator manages)."""
    secret = by_name(docs, "Secret", name)
    files = {}
    for item in items:
        key = item["key"]
        if secret is None:
            files[item["path"]] = f"from-the-operators-secret-{key}\n".encode()
        elif key in secret.get("stringData", {}):
            files[item["path"]] = secret["stringData"][key].encode()
        else:
            import base64

            files[item["path"]] = base64.b64decode(secret["data"][key])
    return files


def lay_out_volume(docs, volume, mount, root):
    """Writes the files `volume` would show at `mount` under `root`, with the kubelet's modes."""
    target = root / mount["mountPath"].lstrip("/")
    if "configMap" in volume or "secret" in volume:
        if "configMap" in volume:
            data = by_name(docs, "ConfigMap", volume["configMap"]["name"])["data"]
        else:
            secret = volume["secret"]
            keys = [{"key": k, "path": k} for k in by_name(docs, "Secret", secret["secretName"]).get("stringData", {})]
            data = {k: v.decode() for k, v in secret_files(docs, secret["secretName"], secret.get("items", keys)).items()}
        if "subPath" in mount:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[mount["subPath"]])
        else:
            target.mkdir(parents=True, exist_ok=True)
            for k, v in data.items():
                (target / k).write_text(v)
    elif "projected" in volume:
        mode = volume["projected"].get("defaultMode", 0o644)
        target.mkdir(parents=True, exist_ok=True)
        for source in volume["projected"]["sources"]:
            s = source["secret"]
            for path, content in secret_files(docs, s["name"], s["items"]).items():
                (target / path).write_bytes(content)
                os.chmod(target / path, mode)
    elif "persistentVolumeClaim" in volume:
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o700)
    else:
        raise ValueError(f"unhandled volume {volume}")


def container_env(container):
    """The container's environment as the kubelet makes it: downward API fields filled in,
    `$(VAR)` replaced by a variable defined earlier in the list (else left as written)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), e["value"])
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = SECRET_VALUES.get((ref["name"], ref["key"]), f"secret {ref['name']}/{ref['key']}")
        else:
            env[e["name"]] = POD_FIELDS[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def server_toml(docs):
    """The rendered server.toml, parsed, and the kind of resource that holds it."""
    for kind in ("ConfigMap", "Secret"):
        for d in kinds(docs, kind):
            text = (d.get("data") if kind == "ConfigMap" else d.get("stringData", {})).get("server.toml")
            if text is not None:
                return tomllib.loads(text), kind
    return None, None


def check_cluster(case, docs, values):
    """With server.cluster.enabled: the [cluster] table, the pod's name and address in the
    environment, the peer port and its headless Service, the key file, the Redis URL out of
    every ConfigMap. Without it: none of them."""
    server = values.get("server", {})
    if not server.get("enabled", True):
        return
    cluster = server.get("cluster", {})
    enabled = cluster.get("enabled", False)
    toml, holder = server_toml(docs)
    deploy = by_name(docs, "Deployment", f"{RELEASE}-tunnel-server")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    ports = {p["name"]: p for p in container["ports"]}
    peer_svc = by_name(docs, "Service", f"{RELEASE}-tunnel-peer")
    if not enabled:
        if "cluster" in toml or "peer" in ports or peer_svc or "TUNNEL_CLUSTER_ADVERTISE" in env:
            fail(case, "cluster settings rendered without server.cluster.enabled")
        return
    peer_port = cluster.get("peerPort", 7443)
    protocol = "UDP" if server.get("relay", {}).get("transport") == "quic" else "TCP"
    redis = cluster["redis"]
    want = {"peer": f"0.0.0.0:{peer_port}", "secretFile": f"{CREDENTIALS}/cluster-secret"}
    if redis.get("url"):
        want["redis"] = redis["url"]
    else:
        ref = (env.get("TUNNEL_CLUSTER_REDIS") or {}).get("valueFrom", {}).get("secretKeyRef", {})
        if (ref.get("name"), ref.get("key")) != (redis["existingSecret"], redis.get("key", "url")):
            fail(case, f"TUNNEL_CLUSTER_REDIS does not come from Secret {redis['existingSecret']}: {ref}")
    if cluster.get("lease"):
        want["lease"] = cluster["lease"]
    if toml.get("cluster") != want:
        fail(case, f"[cluster] is {toml.get('cluster')}, expected {want}")
    if holder != "Secret":
        fail(case, f"server.toml holds the Redis URL in a {holder}, not a Secret")
    for cm in kinds(docs, "ConfigMap"):
        if redis.get("url") and redis["url"] in yaml.safe_dump(cm):
            fail(case, f"ConfigMap {cm['metadata']['name']} holds the Redis URL")
    fields = {n: env.get(n, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for n in ("POD_IP", "TUNNEL_CLUSTER_NAME")}
    if fields != {"POD_IP": "status.podIP", "TUNNEL_CLUSTER_NAME": "metadata.name"}:
        fail(case, f"the pod's address and name are not in the environment: {fields}")
    advertise = container_env(container).get("TUNNEL_CLUSTER_ADVERTISE")
    if advertise != POD_FIELDS["status.podIP"]:
        fail(case, f"TUNNEL_CLUSTER_ADVERTISE becomes {advertise!r} in the pod")
    if ports.get("peer", {}).get("containerPort") != peer_port or ports["peer"].get("protocol") != protocol:
        fail(case, f"no {protocol} container port peer {peer_port}: {ports.get('peer')}")
    if peer_svc is None:
        fail(case, "no peer Service")
    else:
        spec = peer_svc["spec"]
        if spec.get("clusterIP") != "None" or spec.get("publishNotReadyAddresses") is not True:
            fail(case, "the peer Service is not headless with publishNotReadyAddresses")
        if spec["selector"] != deploy["spec"]["selector"]["matchLabels"]:
            fail(case, "the peer Service does not select the server's pods")
        if [(p["port"], p["targetPort"], p["protocol"]) for p in spec["ports"]] != [(peer_port, "peer", protocol)]:
            fail(case, f"the peer Service's ports are {spec['ports']}")
    sources = deploy["spec"]["template"]["spec"]["volumes"]
    projected = [s["secret"] for v in sources if "projected" in v for s in v["projected"]["sources"]]
    key_sources = [s for s in projected if any(i["path"] == "cluster-secret" for i in s["items"])]
    secret = cluster.get("secret", {})
    name = secret.get("existingSecret") or f"{RELEASE}-tunnel-cluster"
    if [s["name"] for s in key_sources] != [name]:
        fail(case, f"cluster-secret comes from {[s['name'] for s in key_sources]}, not Secret {name}")
    elif not secret.get("existingSecret"):
        made = secret_files(docs, name, [{"key": secret.get("key", "secret"), "path": "k"}])["k"]
        if len(made) < 16:
            fail(case, f"the generated cluster key has {len(made)} bytes")
    if "checksum/cluster" not in deploy["spec"]["template"]["metadata"]["annotations"]:
        fail(case, "no checksum/cluster annotation")


def run_checks(case, docs, bin_dir, workdir):
    """Runs each Deployment's container command with --check in its laid-out volumes."""
    checked = 0
    for deploy in kinds(docs, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            root = pathlib.Path(tempfile.mkdtemp(dir=workdir, prefix=f"{case}-{c['name']}-"))
            mounts = c.get("volumeMounts", [])
            for m in mounts:
                lay_out_volume(docs, volumes[m["name"]], m, root)

            def local(text):
                for m in sorted(mounts, key=lambda m: -len(m["mountPath"])):
                    text = text.replace(m["mountPath"], str(root / m["mountPath"].lstrip("/")))
                return text

            for m in mounts:
                if "subPath" in m:
                    path = root / m["mountPath"].lstrip("/")
                    path.write_text(local(path.read_text()))
            env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "TUNNEL_TOKEN")}
            env.update(container_env(c))
            env = {k: local(v) for k, v in env.items()}
            command = [str(pathlib.Path(bin_dir) / c["command"][0])] + [local(a) for a in c["args"]] + ["--check"]
            run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
            output = run.stdout + run.stderr
            print(f"{case}: {c['command'][0]} --check: {output.strip()}")
            if run.returncode != 0 or "configuration is valid" not in output:
                fail(case, f"{' '.join(command)} refused the rendered configuration:\n{output}")
            checked += 1
            # On an IPv6 cluster the pod's address is IPv6 and written bare, like an IPv4 one.
            if env.get("TUNNEL_CLUSTER_ADVERTISE") == POD_FIELDS["status.podIP"]:
                v6 = dict(env, POD_IP="fd00::17", TUNNEL_CLUSTER_ADVERTISE="fd00::17")
                run = subprocess.run(command, capture_output=True, text=True, env=v6, timeout=60)
                if run.returncode != 0 or "configuration is valid" not in run.stdout + run.stderr:
                    fail(case, f"an IPv6 pod address is refused:\n{run.stdout}{run.stderr}")
            # The Secret's files are group-readable (fsGroup): only CREDENTIALS_DIRECTORY, the
            # directory the platform made private to this container, lets them through.
            if "CREDENTIALS_DIRECTORY" in env:
                del env["CREDENTIALS_DIRECTORY"]
                run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
                if run.returncode == 0 or "chmod" not in run.stdout + run.stderr:
                    fail(case, f"group-readable secrets were taken outside CREDENTIALS_DIRECTORY:\n{run.stdout}{run.stderr}")
    return checked


def check_rolls_on_change(chart):
    """A changed configuration or token changes the pod template (so the pods roll)."""
    base = {"server": {"tokens": {"global": {"enabled": True, "value": "a"}}}}
    changed_config = copy.deepcopy(base)
    changed_config["server"]["limits"] = {"sniffTimeout": "3s"}
    changed_token = copy.deepcopy(base)
    changed_token["server"]["tokens"]["global"]["value"] = "b"

    def template(values):
        deploy = [d for _, d in render(chart, values) if d["kind"] == "Deployment"][0]
        return hashlib.sha256(yaml.safe_dump(deploy["spec"]["template"]).encode()).hexdigest()

    if template(base) == template(changed_config):
        fail("checksum", "a changed ConfigMap leaves the pod template as it was")
    if template(base) == template(changed_token):
        fail("checksum", "a changed token Secret leaves the pod template as it was")
    cluster = {"server": {"cluster": {"enabled": True, "redis": {"url": "redis://redis:6379/0"}, "secret": {"value": "k" * 32}}}}
    changed_key = copy.deepcopy(cluster)
    changed_key["server"]["cluster"]["secret"]["value"] = "j" * 32
    if template(cluster) == template(changed_key):
        fail("checksum", "a changed cluster key leaves the pod template as it was")


def check_refused(chart, refused_dir):
    files = sorted(pathlib.Path(refused_dir).glob("*.yaml"))
    if not files:
        fail("refused", f"no values files in {refused_dir}")
    for path in files:
        text = path.read_text()
        expect = text.splitlines()[0].removeprefix("# expect:").strip()
        try:
            render(chart, helm.values_from_yaml(text))
        except helm.HelmError as err:
            if expect not in str(err):
                fail(path.name, f"refused, but the message does not say {expect!r}: {err}")
            else:
                print(f"{path.name}: refused: {str(err).splitlines()[0][:200]}")
            continue
        fail(path.name, "rendered: these values should have been refused")


def main():
    chart_dir, bin_dir, refused_dir = sys.argv[1:4]
    report = helm.lint(chart_dir, strict=True)
    for m in report["messages"]:
        if m["severity"] >= 2:
            fail("lint", f"{m['path']}: {m['error']}")
    chart = helm.Chart.load(chart_dir)
    cases = [("default", {})]
    for path in sorted(pathlib.Path(chart_dir, "ci").glob("*-values.yaml")):
        cases.append((path.name.removesuffix("-values.yaml"), helm.values_from_yaml(path.read_text())))
    if len(cases) < 4:
        fail("cases", f"expected the default values and at least three values files, found {len(cases)}")
    with tempfile.TemporaryDirectory() as workdir:
        for case, values in cases:
            lint = helm.lint(chart_dir, values, strict=True)
            for m in lint["messages"]:
                if m["severity"] >= 2:
                    fail(case, f"lint: {m['path']}: {m['error']}")
            docs = render(chart, values)
            kubernetes_validate(case, docs, workdir)
            check_pods(case, docs, values)
            check_service_monitor(case, docs)
            check_cluster(case, docs, values)
            checked = run_checks(case, docs, bin_dir, workdir)
            expected = len(kinds(docs, "Deployment"))
            if checked == 0 or checked != expected:
                fail(case, f"{checked} configurations checked for {expected} Deployments")
            print(f"{case}: {len(docs)} manifests valid, {checked} configurations checked")
    check_rolls_on_change(chart)
    check_refused(chart, refused_dir)
    print(f"chart: {len(cases)} value sets rendered and checked; {len(failures)} problems")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
