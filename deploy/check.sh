#!/usr/bin/env bash
# Check the files in deploy/ with real tools: promtool (config, rules, rule
# unit tests), systemd-analyze verify (skipped when unavailable), JSON and
# YAML parsing, the Kubernetes fleet variant's consistency (and kubectl
# kustomize rendering when kubectl is there). Run by .ci/run and by tests/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")"
fail=0
step() { echo "== $*"; }

step "promtool check config / rules / test rules"
if command -v promtool >/dev/null 2>&1; then
  (cd prometheus && promtool check config prometheus.yml && promtool check rules slotproxy-rules.yml \
     && promtool test rules slotproxy-rules.test.yml) || fail=1
else
  echo "promtool missing (Debian package prometheus; ./dev test installs it)" >&2
  fail=1
fi

step "systemd-analyze verify slotproxy.service"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart to exist: point it at a binary that does.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  bin=$(command -v true)
  [ -x ../target/debug/slotproxy ] && bin=$(cd ../target/debug && pwd)/slotproxy
  sed "s|/usr/local/bin/slotproxy|$bin|" slotproxy.service >"$tmp/slotproxy.service"
  out=$(systemd-analyze verify "$tmp/slotproxy.service" 2>&1) || fail=1
  echo "$out"
  # verify exits 0 on keys it ignores ("Failed to parse ..., ignoring"):
  # anything it says about the unit file itself is an error here.
  if echo "$out" | grep -q "slotproxy.service:"; then fail=1; fi
  [ "$fail" -eq 0 ] && echo "slotproxy.service ok"
else
  echo "systemd-analyze not available: skipped"
fi

step "JSON"
for f in grafana/*.json; do
  python3 -m json.tool "$f" >/dev/null && echo "$f ok" || { echo "$f: invalid JSON"; fail=1; }
done

step "YAML"
if python3 -c "import yaml" 2>/dev/null; then
  for f in kubernetes/*.yaml kubernetes-fleet/*.yaml prometheus/*.yml; do
    python3 - "$f" <<'PY' || fail=1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]
for d in docs:
    if sys.argv[1].startswith("kubernetes") and not {"apiVersion", "kind"} <= d.keys():
        sys.exit(f"{sys.argv[1]}: a manifest without apiVersion/kind")
print(f"{sys.argv[1]} ok ({len(docs)} document(s))")
PY
  done
else
  echo "python3 yaml not available: YAML parse skipped"
fi

step "Kubernetes fleet variant (kubernetes-fleet/)"
# Without a cluster: every file a kustomization names exists; the fleet's
# config is etcd with one endpoint per member of the etcd StatefulSet (names,
# Service, client port and --initial-cluster agree); more than one replica.
if python3 -c "import yaml, tomllib" 2>/dev/null; then
  python3 - <<'PY' || fail=1
import os, sys, tomllib, yaml

def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d is not None]

problems = []
for root in ["kubernetes", "kubernetes-fleet"]:
    k = load(os.path.join(root, "kustomization.yaml"))[0]
    for r in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
        if not os.path.exists(os.path.join(root, r)):
            problems.append(f"{root}/kustomization.yaml names {r}, which does not exist")

fleet = "kubernetes-fleet"
deploy = load(f"{fleet}/deployment-patch.yaml")[0]
if deploy["spec"].get("replicas", 1) < 2:
    problems.append(f"{fleet}/deployment-patch.yaml: replicas must be > 1 for a fleet")
cm = load(f"{fleet}/configmap-patch.yaml")[0]
state = tomllib.loads(cm["data"]["config.toml"]).get("state", {})
if state.get("backend") != "etcd":
    problems.append(f"{fleet}/configmap-patch.yaml: [state] backend must be \"etcd\"")
docs = {d["kind"]: d for d in load(f"{fleet}/etcd.yaml")}
sts, svc = docs["StatefulSet"], docs["Service"]
name, n = sts["metadata"]["name"], sts["spec"]["replicas"]
if sts["spec"]["serviceName"] != svc["metadata"]["name"]:
    problems.append("etcd.yaml: the StatefulSet's serviceName is not the headless Service")
client = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "client")
want = [f"http://{name}-{i}.{svc['metadata']['name']}:{client}" for i in range(n)]
if state.get("etcd_endpoints") != want:
    problems.append(f"etcd_endpoints {state.get('etcd_endpoints')} are not the {n} etcd members {want}")
args = sts["spec"]["template"]["spec"]["containers"][0]["command"]
initial = next(a.split("=", 1)[1] for a in args if a.startswith("--initial-cluster="))
members = sorted(m.split("=")[0] for m in initial.split(","))
if members != [f"{name}-{i}" for i in range(n)]:
    problems.append(f"etcd.yaml: --initial-cluster names {members}, not the {n} pods of {name}")
for p in problems:
    print(p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"kubernetes-fleet ok: {deploy['spec']['replicas']} replicas on {n} etcd members")
PY
else
  echo "python3 yaml/tomllib not available: fleet variant checks skipped"
fi
if command -v kubectl >/dev/null 2>&1; then
  for d in kubernetes kubernetes-fleet; do
    if out=$(kubectl kustomize "$d" 2>&1); then
      echo "kubectl kustomize $d ok ($(echo "$out" | grep -c '^kind:') objects)"
    else
      echo "$out"; fail=1
    fi
  done
  # the fleet has no state volume claim of its own (etcd holds the state)
  if kubectl kustomize kubernetes-fleet 2>/dev/null | grep -q '^kind: PersistentVolumeClaim'; then
    echo "kubernetes-fleet renders a PersistentVolumeClaim" >&2; fail=1
  fi
else
  echo "kubectl not available: kustomize rendering skipped"
fi

[ "$fail" -eq 0 ] && echo "deploy/: all checks passed" || { echo "deploy/: checks FAILED" >&2; exit 1; }
