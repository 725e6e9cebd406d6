"""Checks for deploy/validate.sh that need a real parser: YAML, setting names
against deploy/settings.txt (generated from src/config.rs), cross-file
consistency, and a tiny HTTP upstream and client for the proxy log-redaction
tests. Run from the repository root:

    python3 deploy/validate.py yaml | settings | consistency
    python3 deploy/validate.py upstream PORTFILE
    python3 deploy/validate.py probe HOST PORT SNI_OR_- HOSTHEADER PATH [METHOD]
"""

import glob
import os
import re
import socket
import ssl
import sys

import yaml

DEPLOY = "deploy"

errors = []


def fail(msg):
    errors.append(msg)


def finish():
    for e in errors:
        print(e)
    sys.exit(1 if errors else 0)


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files():
    return sorted(glob.glob(f"{DEPLOY}/**/*.yaml", recursive=True))


# --- yaml --------------------------------------------------------------


def cmd_yaml():
    files = yaml_files()
    if not files:
        fail("no YAML files under deploy/")
    for path in files:
        try:
            docs = load_yaml_docs(path)
        except yaml.YAMLError as e:
            fail(f"{path}: {e}")
            continue
        if not docs:
            fail(f"{path}: empty")
        print(f"{path}: {len(docs)} document(s)")
    finish()


# --- settings ----------------------------------------------------------


SETTINGS_LIST = f"{DEPLOY}/settings.txt"
KINDS = {"text", "number", "list", "secret"}


def known_settings():
    """Every setting's key and kind, from the list generated from the settings
    declaration in src/config.rs (a unit test there keeps it in step)."""
    found = {}
    try:
        lines = open(SETTINGS_LIST, encoding="utf-8").read().splitlines()
    except OSError as e:
        fail(f"{SETTINGS_LIST}: {e}")
        return found
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in KINDS or not re.fullmatch(r"[a-z0-9_]+", fields[0]):
            fail(f"{SETTINGS_LIST}:{n}: expected `key kind` (kind one of {sorted(KINDS)})")
            continue
        found[fields[0]] = fields[1]
    if not found:
        fail(f"{SETTINGS_LIST}: no settings listed")
    return found


def setting_names(settings):
    names = {}
    for key, kind in settings.items():
        names[f"SEALPOST_{key.upper()}"] = key
        if kind == "secret":
            names[f"SEALPOST_{key.upper()}_FILE"] = key
    return names


def cmd_settings():
    settings = known_settings()
    names = setting_names(settings)
    files = [
        p
        for p in glob.glob(f"{DEPLOY}/**/*", recursive=True)
        if os.path.isfile(p) and not p.endswith(".py") and "/secrets/" not in p and p != SETTINGS_LIST
    ]
    files += [p for p in ["docs/operations.md"] if os.path.exists(p)]
    used = set()
    for path in sorted(files):
        text = open(path, encoding="utf-8", errors="replace").read()
        for n, line in enumerate(text.splitlines(), 1):
            for name in re.findall(r"\bSEALPOST_[A-Z0-9_]*[A-Z0-9]", line):
                if name.startswith("SEALPOST_TEST_"):
                    continue
                if name not in names:
                    fail(f"{path}:{n}: {name} is not a Sealpost setting")
                else:
                    used.add(names[name])
    print(f"{len(settings)} settings known, {len(used)} used in deploy files")
    finish()


# --- consistency -------------------------------------------------------


def seconds(value):
    m = re.fullmatch(r"(\d+)(s|m)?", str(value).strip())
    if not m:
        return None
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def routes():
    server = open("src/server.rs", encoding="utf-8").read()
    return set(re.findall(r'\.route\("([^"]+)"', server))


def check_compose():
    path = f"{DEPLOY}/compose.yaml"
    compose = load_yaml_docs(path)[0]
    services = compose.get("services", {})
    defined_secrets = set(compose.get("secrets", {}))
    caddy_ip = services["caddy"]["networks"]["front"]["ipv4_address"]
    sealposts = [n for n, s in services.items() if s.get("image") == "sealpost:local"]
    if len(sealposts) < 2:
        fail(f"{path}: expected two Sealpost services, found {sealposts}")
    for name in sealposts:
        s = services[name]
        env = s.get("environment", {})
        proxies = [p.strip() for p in str(env.get("SEALPOST_TRUSTED_PROXIES", "")).split(",")]
        if caddy_ip not in proxies:
            fail(f"{path}: {name}: Caddy's address {caddy_ip} is not in SEALPOST_TRUSTED_PROXIES")
        grace = seconds(s.get("stop_grace_period", "10s"))
        drain = int(env.get("SEALPOST_SHUTDOWN_TIMEOUT_SECS", 30))
        if grace is None or grace <= drain:
            fail(f"{path}: {name}: stop_grace_period must exceed SEALPOST_SHUTDOWN_TIMEOUT_SECS ({drain})")
        for var, value in env.items():
            if var.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                secret = str(value).rsplit("/", 1)[1]
                if secret not in (s.get("secrets") or []):
                    fail(f"{path}: {name}: {var} reads secret {secret}, which is not mounted")
        if not str(env.get("SEALPOST_DATABASE_URL_FILE", env.get("SEALPOST_DATABASE_URL", ""))):
            fail(f"{path}: {name}: several instances need PostgreSQL (SEALPOST_DATABASE_URL[_FILE])")
        if not str(env.get("SEALPOST_BLOB_URL", "")).startswith("s3://"):
            fail(f"{path}: {name}: several instances need S3 (SEALPOST_BLOB_URL=s3://…)")
    for name, s in services.items():
        for secret in s.get("secrets") or []:
            secret = secret if isinstance(secret, str) else secret.get("source")
            if secret not in defined_secrets:
                fail(f"{path}: {name}: secret {secret} is not defined")
    caddyfile = open(f"{DEPLOY}/caddy/Caddyfile", encoding="utf-8").read()
    upstreams = re.search(r"^\s*reverse_proxy\s+([^{\n]+)\{", caddyfile, re.M)
    hosts = {u.split(":")[0] for u in upstreams.group(1).split()} if upstreams else set()
    if hosts != set(sealposts):
        fail(f"deploy/caddy/Caddyfile: upstreams {sorted(hosts)} != Sealpost services {sorted(sealposts)}")
    if "health_uri /readyz" not in caddyfile:
        fail("deploy/caddy/Caddyfile: active health checks should use /readyz")
    mount = services["caddy"]["volumes"][0]
    if not mount.startswith("./caddy/Caddyfile:"):
        fail(f"{path}: caddy should mount ./caddy/Caddyfile")


def k8s_docs():
    docs = {}
    for path in sorted(glob.glob(f"{DEPLOY}/k8s/*.yaml")):
        for d in load_yaml_docs(path):
            if "kind" in d and d["kind"] != "Kustomization":
                docs[(d["kind"], d["metadata"]["name"])] = (path, d)
    return docs


def check_k8s():
    docs = k8s_docs()
    kust_path = f"{DEPLOY}/k8s/kustomization.yaml"
    kust = load_yaml_docs(kust_path)[0]
    for r in kust.get("resources", []):
        if not os.path.exists(f"{DEPLOY}/k8s/{r}"):
            fail(f"{kust_path}: resource {r} does not exist")
    path, dep = docs[("Deployment", "sealpost")]
    spec = dep["spec"]["template"]["spec"]
    if dep["spec"].get("replicas", 1) < 2:
        fail(f"{path}: fewer than 2 replicas")
    if spec.get("enableServiceLinks") is not False:
        fail(f"{path}: enableServiceLinks must be false (service env vars start with SEALPOST_)")
    (container,) = [c for c in spec["containers"] if c["name"] == "sealpost"]
    image_names = {i["name"] for i in kust.get("images", [])}
    if container["image"].split(":")[0] not in image_names:
        fail(f"{kust_path}: no images entry for {container['image']}")
    known_routes = routes()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = container.get(probe, {}).get("httpGet", {}).get("path")
        if p not in known_routes:
            fail(f"{path}: {probe} path {p} is not a route in src/server.rs")
    if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail(f"{path}: readiness should use /readyz")
    ports = {p["name"] for p in container["ports"]}
    cm_name = container["envFrom"][0]["configMapRef"]["name"]
    cm_path, cm = docs[("ConfigMap", cm_name)]
    drain = int(cm["data"].get("SEALPOST_SHUTDOWN_TIMEOUT_SECS", 30))
    pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if spec.get("terminationGracePeriodSeconds", 30) <= drain + pause:
        fail(f"{path}: terminationGracePeriodSeconds must exceed preStop ({pause}) + shutdown ({drain})")
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {}
    for c in spec.get("initContainers", []) + spec["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                fail(f"{path}: {c['name']} mounts unknown volume {m['name']}")
            if c is container:
                mounts[m["mountPath"]] = m
    for e in container.get("env", []):
        if e["name"].endswith("_FILE"):
            d = os.path.dirname(e["value"])
            if d not in mounts:
                fail(f"{path}: {e['name']} points into {d}, which is not mounted")
    if mounts.get("/run/sealpost/key", {}).get("readOnly") is not True:
        fail(f"{path}: the master key copy must be mounted read-only")
    if "master.key" not in " ".join(spec["initContainers"][0]["command"]):
        fail(f"{path}: the init container should copy the master key")
    sc = container["securityContext"]
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        fail(f"{path}: container securityContext is not locked down")
    if spec["securityContext"].get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(f"{path}: seccompProfile RuntimeDefault missing")
    _, secrets = {}, {}
    for (kind, name), (_p, d) in docs.items():
        if kind == "Secret":
            secrets[name] = set(d.get("stringData", {})) | set(d.get("data", {}))
    for v in volumes.values():
        if "secret" in v:
            have = secrets.get(v["secret"]["secretName"])
            if have is None:
                fail(f"{path}: Secret {v['secret']['secretName']} missing from secrets.example.yaml")
                continue
            for item in v["secret"].get("items", []):
                if item["key"] not in have:
                    fail(f"{path}: Secret {v['secret']['secretName']} has no key {item['key']}")
    svc_path, svc = docs[("Service", "sealpost")]
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in ports:
            fail(f"{svc_path}: targetPort {p['targetPort']} is not a container port")
    ing_path, ing = docs[("Ingress", "sealpost")]
    for rule in ing["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            port = p["backend"]["service"]["port"].get("name")
            if port not in {sp["name"] for sp in svc["spec"]["ports"]}:
                fail(f"{ing_path}: backend port {port} is not a Service port")
            if port == "metrics":
                fail(f"{ing_path}: metrics must not be routed through the Ingress")


def check_systemd():
    unit_path = f"{DEPLOY}/systemd/sealpost.service"
    unit = open(unit_path, encoding="utf-8").read()
    active = [l for l in unit.splitlines() if l and not l.startswith(("#", ";"))]
    creds = {l.split("=", 1)[1].split(":", 1)[0] for l in active if l.startswith("LoadCredential=")}
    for l in active:
        m = re.match(r"Environment=(SEALPOST_\w+_FILE)=%d/(\S+)", l)
        if m and m.group(2) not in creds:
            fail(f"{unit_path}: {m.group(1)} reads credential {m.group(2)}, which is not loaded")
    for cred in creds:
        if not any(re.match(rf"Environment=SEALPOST_\w+_FILE=%d/{re.escape(cred)}$", l) for l in active):
            fail(f"{unit_path}: credential {cred} is loaded but no *_FILE setting reads it")
    stop = re.search(r"^TimeoutStopSec=(\S+)$", unit, re.M)
    env = open(f"{DEPLOY}/systemd/sealpost.env.example", encoding="utf-8").read()
    drain = re.search(r"^SEALPOST_SHUTDOWN_TIMEOUT_SECS=(\d+)$", env, re.M)
    if not stop or not drain or seconds(stop.group(1)) <= int(drain.group(1)):
        fail(f"{unit_path}: TimeoutStopSec must exceed SEALPOST_SHUTDOWN_TIMEOUT_SECS")
    for n, line in enumerate(env.splitlines(), 1):
        if line and not line.startswith("#") and not re.fullmatch(r"SEALPOST_[A-Z0-9_]+=\S.*", line):
            fail(f"{DEPLOY}/systemd/sealpost.env.example:{n}: not a KEY=value line")


def check_dockerfile():
    path = f"{DEPLOY}/Dockerfile"
    text = open(path, encoding="utf-8").read()
    ignore = open(f"{path}.dockerignore", encoding="utf-8").read().split()
    allowed = {p[1:].rstrip("/") for p in ignore if p.startswith("!")}
    for line in text.splitlines():
        m = re.match(r"COPY (?!--from)(.+)", line)
        if not m:
            continue
        *sources, _dest = m.group(1).split()
        for s in sources:
            if not os.path.exists(s):
                fail(f"{path}: COPY source {s} does not exist in the repository")
            if s.rstrip("/") not in allowed:
                fail(f"{path}: COPY source {s} is excluded by Dockerfile.dockerignore")
    for route in ("/healthz", "/readyz"):
        if route not in routes():
            fail(f"src/server.rs: no {route} route (the deploy files probe it)")
    if "USER 10001" not in text:
        fail(f"{path}: should run as UID 10001")


def cmd_consistency():
    for check in (check_compose, check_k8s, check_systemd, check_dockerfile):
        try:
            check()
        except (KeyError, IndexError, TypeError, ValueError) as e:
            fail(f"{check.__name__}: unexpected structure: {e!r}")
    finish()


# --- proxy tests -------------------------------------------------------


def cmd_upstream(port_file):
    """An upstream that answers 200 to anything, standing in for Sealpost."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _ok(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _ok

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


def cmd_probe(host, port, sni, host_header, path, method="GET"):
    """One HTTPS request; prints the status line. TLS is not verified (test CAs)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    body = b"csrf=x" if method == "POST" else b""
    req = (
        f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=None if sni == "-" else sni) as s:
            s.sendall(req)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    print(data.split(b"\r\n", 1)[0].decode())


def main():
    cmd, *args = sys.argv[1:] or ["help"]
    commands = {
        "yaml": cmd_yaml,
        "settings": cmd_settings,
        "consistency": cmd_consistency,
        "upstream": cmd_upstream,
        "probe": cmd_probe,
    }
    if cmd not in commands:
        print(__doc__)
        sys.exit(2)
    commands[cmd](*args)


if __name__ == "__main__":
    main()
