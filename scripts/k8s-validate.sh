#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (default: k8s/ of this repository).
#
#   scripts/k8s-validate.sh [DIR]
#
# Steps, all of which run; the script exits non-zero if any fails:
#   1. yamllint -s (strict: warnings fail too)
#   2. project checks: every document parses, JSON/JSON-C payloads parse, pods that request an
#      afxdp/<pool> resource attach the matching NetworkAttachmentDefinition and hold exactly
#      NET_RAW, IPC_LOCK and BPF, plus NET_ADMIN when the ConfigMap the container mounts has
#      maglev.announce (then also /dev/net/tun, a BIRD container in the pod and a termination
#      grace period above the drain period); BIRD containers hold exactly NET_BIND_SERVICE and
#      NET_ADMIN and have a readiness probe; other containers add no capability; all drop ALL,
#      none privileged, no hostNetwork; in such pods every container has requests == limits for
#      cpu and memory (Guaranteed QoS, which the static CPU manager needs to pin the workers);
#      metrics on port 9100; kustomization.yaml lists every manifest
#   3. kubernetes-validate --strict on the core kinds (unknown fields fail)
#   4. check-jsonschema on the custom resources, with the schemas in DIR/schemas:
#      NetworkAttachmentDefinition (k8s.cni.cncf.io/v1), PodMonitor and ServiceMonitor
#      (monitoring.coreos.com/v1); also the device plugin's config.json and each NAD's CNI config
#   5. kubectl kustomize DIR, when kubectl is installed
#
# The validators are installed once, at pinned versions, into a virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/cne-k8s-validate (override with CNE_VALIDATE_VENV); later runs
# need no network.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
YAMLLINT_VERSION=1.38.0
# Kubernetes API version the core kinds are checked against.
K8S_VERSION=${K8S_VERSION:-1.32.0}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$(cd "${1:-$repo/k8s}" && pwd)
pins="kv${KUBERNETES_VALIDATE_VERSION}-cj${CHECK_JSONSCHEMA_VERSION}-yl${YAMLLINT_VERSION}"
venv=${CNE_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cne-k8s-validate/$pins}

if [[ ! -f "$venv/.installed-$pins" ]]; then
    echo "== installing validators into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" \
        "yamllint==$YAMLLINT_VERSION"
    touch "$venv/.installed-$pins"
fi
py="$venv/bin/python"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cne-k8s-validate.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failed=()
step() {
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
        echo "   ok"
    else
        echo "   FAILED: $name"
        failed+=("$name")
    fi
}

yamllint_config='{extends: default, rules: {line-length: {max: 120}, truthy: {check-keys: false}}}'
step "yamllint -s" "$venv/bin/yamllint" -s -d "$yamllint_config" "$dir"

# Splits every document into its own file (core kinds / custom resources / extracted payloads)
# and applies the project's rules.
split_and_check() {
    "$py" - "$dir" "$tmp" <<'PY'
import json, os, re, sys
import yaml

src, out = sys.argv[1], sys.argv[2]
errors = []
def err(where, msg):
    errors.append(f"{where}: {msg}")

CRDS = {
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
AFXDP_CAPS = {"NET_RAW", "IPC_LOCK", "BPF"}
# maglev.announce: the TUN device nfmvip0 and its addresses.
ANNOUNCE_CAPS = AFXDP_CAPS | {"NET_ADMIN"}
# BGP listens on port 179; BFD sets SO_PRIORITY 7 on its sockets.
BIRD_CAPS = {"NET_BIND_SERVICE", "NET_ADMIN"}
# nf-maglev stops within this many seconds once the drain period is over.
STOP_S = 2
METRICS_PORT = 9100

def strip_jsonc(text):
    """Blanks // and /* */ comments outside strings (keeps line numbers)."""
    res, i, n, state = [], 0, len(text), "code"
    while i < n:
        c, nxt = text[i], text[i + 1] if i + 1 < n else ""
        if state == "code":
            if c == '"':
                state = "str"; res.append(c)
            elif c == "/" and nxt == "/":
                state = "line"; res.append("  "); i += 1
            elif c == "/" and nxt == "*":
                state = "block"; res.append("  "); i += 1
            else:
                res.append(c)
        elif state == "str":
            if c == "\\":
                res.append(c + nxt); i += 1
            else:
                if c == '"':
                    state = "code"
                res.append(c)
        elif state == "line":
            if c == "\n":
                state = "code"; res.append(c)
            else:
                res.append(" ")
        else:
            if c == "*" and nxt == "/":
                state = "code"; res.append("  "); i += 1
            else:
                res.append("\n" if c == "\n" else " ")
        i += 1
    return "".join(res)

files = sorted(f for f in os.listdir(src)
               if f.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(src, f)))
docs = []
for f in files:
    if f == "kustomization.yaml":
        continue
    try:
        with open(os.path.join(src, f)) as fh:
            loaded = [d for d in yaml.safe_load_all(fh) if d is not None]
    except yaml.YAMLError as e:
        err(f, f"YAML: {e}")
        continue
    for i, d in enumerate(loaded):
        where = f"{f}#{i}"
        if not isinstance(d, dict):
            err(where, "document is not a mapping")
            continue
        for key in ("apiVersion", "kind"):
            if not isinstance(d.get(key), str):
                err(where, f"missing {key}")
        name = (d.get("metadata") or {}).get("name")
        if not name:
            err(where, "missing metadata.name")
        docs.append((where, d))

# kustomization.yaml must list exactly the manifests of the directory.
kpath = os.path.join(src, "kustomization.yaml")
if os.path.exists(kpath):
    with open(kpath) as fh:
        kust = yaml.safe_load(fh) or {}
    listed = set(kust.get("resources") or [])
    present = {f for f in files if f != "kustomization.yaml"}
    for f in sorted(present - listed):
        err("kustomization.yaml", f"{f} is not listed in resources")
    for f in sorted(listed - present):
        err("kustomization.yaml", f"lists {f}, which does not exist")
else:
    err(src, "no kustomization.yaml")

by_kind = {}
for where, d in docs:
    by_kind.setdefault(d.get("kind"), []).append((where, d))

# Payloads: JSON/JSON-C in ConfigMaps, the device plugin's config.json.
os.makedirs(os.path.join(out, "extracted"), exist_ok=True)
pools = None
# ConfigMap name -> the maglev.announce sections of its JSON/JSON-C payloads.
announce_by_cm = {}
for where, d in by_kind.get("ConfigMap", []):
    for key, text in (d.get("data") or {}).items():
        if not key.endswith((".json", ".jsonc")):
            continue
        try:
            value = json.loads(strip_jsonc(text))
        except json.JSONDecodeError as e:
            err(where, f"data.{key}: line {e.lineno}: {e.msg}")
            continue
        maglev = value.get("maglev") if isinstance(value, dict) else None
        if isinstance(maglev, dict) and "announce" in maglev:
            announce_by_cm.setdefault(d["metadata"].get("name"), []).append(maglev["announce"])
        if d["metadata"].get("name") == "afxdp-dp-config" and key == "config.json":
            with open(os.path.join(out, "extracted", "afxdp-dp-config.json"), "w") as fh:
                json.dump(value, fh)
            pools = {p.get("Name") for p in value.get("Pools", []) if isinstance(p, dict)}

# NetworkAttachmentDefinitions: resourceName names a pool; the CNI config parses.
nad_resource = {}
for where, d in by_kind.get("NetworkAttachmentDefinition", []):
    meta = d.get("metadata") or {}
    res = (meta.get("annotations") or {}).get("k8s.v1.cni.cncf.io/resourceName", "")
    if not re.fullmatch(r"afxdp/[A-Za-z0-9]{1,20}", res):
        err(where, f"annotation k8s.v1.cni.cncf.io/resourceName {res!r} is not afxdp/<pool>")
    elif pools is not None and res.split("/", 1)[1] not in pools:
        err(where, f"{res}: no such pool in afxdp-dp-config")
    nad_resource[meta.get("name")] = res
    try:
        cni = json.loads((d.get("spec") or {}).get("config", ""))
    except json.JSONDecodeError as e:
        err(where, f"spec.config: {e.msg} (line {e.lineno})")
        continue
    with open(os.path.join(out, "extracted", f"cni-{meta.get('name')}.json"), "w") as fh:
        json.dump(cni, fh)

# Pods and pod templates.
def pod_spec(d):
    if d.get("kind") == "Pod":
        return d.get("metadata") or {}, d.get("spec") or {}
    tpl = (d.get("spec") or {}).get("template") or {}
    return tpl.get("metadata") or {}, tpl.get("spec") or {}

def is_bird(c):
    cmd = c.get("command") or []
    return bool(cmd) and os.path.basename(str(cmd[0])) == "bird"

def check_security(cw, c, want):
    """Not privileged, drop ALL, add exactly `want`."""
    sc = c.get("securityContext") or {}
    capsc = sc.get("capabilities") or {}
    if sc.get("privileged"):
        err(cw, "privileged")
    if [x.upper() for x in capsc.get("drop", [])] != ["ALL"]:
        err(cw, "capabilities.drop must be [ALL]")
    added = {x.upper() for x in capsc.get("add", [])}
    if added != want:
        return sorted(added)
    return None

for kind in ("Pod", "DaemonSet", "Deployment", "StatefulSet", "Job"):
    for where, d in by_kind.get(kind, []):
        meta, spec = pod_spec(d)
        if spec.get("hostNetwork"):
            err(where, "hostNetwork: the device plugin checks the pod name as hostname")
        nets = [n.strip() for n in
                (meta.get("annotations") or {}).get("k8s.v1.cni.cncf.io/networks", "").split(",") if n.strip()]
        volume_cm = {v.get("name"): (v.get("configMap") or {}).get("name")
                     for v in spec.get("volumes", []) if v.get("configMap")}
        announcing = []
        birds = []
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            cw = f"{where} container {c.get('name')}"
            res = c.get("resources") or {}
            afxdp = {k for k in (res.get("limits") or {}) if k.startswith("afxdp/")}
            afxdp |= {k for k in (res.get("requests") or {}) if k.startswith("afxdp/")}
            for r in sorted(afxdp):
                if (res.get("requests") or {}).get(r) != (res.get("limits") or {}).get(r):
                    err(cw, f"{r}: requests and limits differ")
                if not any(nad_resource.get(n) == r for n in nets):
                    err(cw, f"requests {r} but attaches no NetworkAttachmentDefinition of that pool "
                            f"(networks: {nets})")
            mounts = c.get("volumeMounts", [])
            announce = [a for m in mounts for a in announce_by_cm.get(volume_cm.get(m.get("name")), [])]
            if afxdp:
                want = ANNOUNCE_CAPS if announce else AFXDP_CAPS
                bad = check_security(cw, c, want)
                if bad is not None:
                    why = ("its config has maglev.announce, which needs NET_ADMIN" if announce else
                           "NET_ADMIN only with maglev.announce in its config")
                    err(cw, f"capabilities.add {bad} must be exactly {sorted(want)} ({why})")
                if announce:
                    announcing.append((cw, announce))
                    if not any(m.get("mountPath") == "/dev/net/tun" for m in mounts):
                        err(cw, "maglev.announce creates a TUN device: mount /dev/net/tun")
            elif is_bird(c):
                birds.append(c)
                bad = check_security(cw, c, BIRD_CAPS)
                if bad is not None:
                    err(cw, f"BIRD: capabilities.add {bad} must be exactly {sorted(BIRD_CAPS)}")
                if not ((c.get("readinessProbe") or {}).get("exec") or {}).get("command"):
                    err(cw, "BIRD: needs an exec readinessProbe (ready while the BGP session is up)")
            else:
                bad = check_security(cw, c, set())
                if bad is not None:
                    err(cw, f"capabilities.add {bad}: only the NF and BIRD containers add capabilities")
            for p in c.get("ports", []):
                if p.get("name") == "metrics" and p.get("containerPort") != METRICS_PORT:
                    err(cw, f"metrics port {p.get('containerPort')} is not {METRICS_PORT}")
        all_containers = spec.get("containers", []) + spec.get("initContainers", [])
        if any(k.startswith("afxdp/") for c in all_containers
               for k in ((c.get("resources") or {}).get("limits") or {})):
            for c in all_containers:
                res = c.get("resources") or {}
                for r in ("cpu", "memory"):
                    req, lim = (res.get("requests") or {}).get(r), (res.get("limits") or {}).get(r)
                    if req is None or str(req) != str(lim):
                        err(f"{where} container {c.get('name')}",
                            f"{r}: requests {req} and limits {lim} differ: the pod would not be "
                            f"Guaranteed and its CPUs not pinned")
        if announcing and not birds:
            err(where, "maglev.announce without a BIRD container in the pod: nothing exports the VIPs")
        if birds and not announcing:
            err(where, "a BIRD container but no container whose config has maglev.announce")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for cw, sections in announcing:
            for a in sections:
                drain = a.get("drain", 5) if isinstance(a, dict) else 5
                if isinstance(drain, (int, float)) and not grace > drain + STOP_S:
                    err(cw, f"terminationGracePeriodSeconds {grace} must exceed maglev.announce.drain "
                            f"{drain} + {STOP_S} s")

for where, d in by_kind.get("Service", []):
    for p in (d.get("spec") or {}).get("ports", []):
        if p.get("name") == "metrics" and p.get("port") != METRICS_PORT:
            err(where, f"metrics port {p.get('port')} is not {METRICS_PORT}")

def is_custom(api_version):
    group = api_version.split("/")[0] if "/" in api_version else ""
    return "." in group and not group.endswith(".k8s.io")

# One file per document, for the validators.
for n, (where, d) in enumerate(docs):
    key = (d.get("apiVersion"), d.get("kind"))
    if key in CRDS:
        sub = os.path.join(out, "crd", d["kind"])
    elif is_custom(d.get("apiVersion") or ""):
        err(where, f"custom resource {key} has no schema in schemas/")
        continue
    else:
        sub = os.path.join(out, "core")
    os.makedirs(sub, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", where)
    with open(os.path.join(sub, f"{n:03d}-{safe}.yaml"), "w") as fh:
        yaml.safe_dump(d, fh, sort_keys=False)

for e in errors:
    print("   " + e)
sys.exit(1 if errors else 0)
PY
}
step "project checks" split_and_check

validate_core() {
    shopt -s nullglob
    local docs=("$tmp"/core/*.yaml)
    if ((${#docs[@]} == 0)); then
        echo "   no core documents"
        return 1
    fi
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${docs[@]}"
}
step "kubernetes-validate --strict (k8s $K8S_VERSION)" validate_core

validate_crds() {
    shopt -s nullglob
    local rc=0 kind schema docs
    for kind in NetworkAttachmentDefinition PodMonitor ServiceMonitor; do
        docs=("$tmp/crd/$kind"/*.yaml)
        ((${#docs[@]})) || continue
        schema="$dir/schemas/$(tr '[:upper:]' '[:lower:]' <<<"$kind")_v1.json"
        echo "   $kind: ${#docs[@]} document(s) against ${schema#"$dir"/}"
        "$venv/bin/check-jsonschema" --schemafile "$schema" "${docs[@]}" || rc=1
    done
    if [[ -f "$tmp/extracted/afxdp-dp-config.json" ]]; then
        echo "   device plugin config.json"
        "$venv/bin/check-jsonschema" --schemafile "$dir/schemas/afxdp-dp-config.json" \
            "$tmp/extracted/afxdp-dp-config.json" || rc=1
    fi
    docs=("$tmp"/extracted/cni-*.json)
    if ((${#docs[@]})); then
        echo "   CNI configs of ${#docs[@]} NetworkAttachmentDefinition(s)"
        "$venv/bin/check-jsonschema" --schemafile "$dir/schemas/afxdp-cni-config.json" "${docs[@]}" || rc=1
    fi
    return $rc
}
step "check-jsonschema (custom resources and payloads)" validate_crds

if command -v kubectl >/dev/null 2>&1; then
    step "kubectl kustomize" kubectl kustomize "$dir" -o "$tmp/kustomized.yaml"
else
    echo "== kubectl kustomize: skipped (kubectl not installed)"
fi

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks passed"
