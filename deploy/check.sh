#!/usr/bin/env bash
# Check the files in deploy/ with real tools: promtool (config, rules, rule
# unit tests), systemd-analyze verify (skipped when unavailable), JSON and
# YAML parsing. Run by .ci/run and by tests/deploy.rs.
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
  for f in kubernetes/*.yaml prometheus/*.yml; do
    python3 - "$f" <<'PY' || fail=1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]
for d in docs:
    if "kubernetes/" in sys.argv[1] and not {"apiVersion", "kind"} <= d.keys():
        sys.exit(f"{sys.argv[1]}: a manifest without apiVersion/kind")
print(f"{sys.argv[1]} ok ({len(docs)} document(s))")
PY
  done
else
  echo "python3 yaml not available: YAML parse skipped"
fi

[ "$fail" -eq 0 ] && echo "deploy/: all checks passed" || { echo "deploy/: checks FAILED" >&2; exit 1; }
