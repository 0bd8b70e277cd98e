#!/usr/bin/env bash
# Validates the Kubernetes manifests: every resource against the Kubernetes 1.37 schemas
# (kubernetes-validate, strict: unknown fields are errors), and the proxy configuration in
# configmap.yaml with `grpcproxy check-config`.
# Usage: bash deploy/kubernetes/validate.sh GRPCPROXY_BINARY
set -euo pipefail
binary=$(realpath "${1:?usage: validate.sh GRPCPROXY_BINARY}")
cd "$(dirname "$0")"
venv=.venv
if ! cmp -s requirements.txt "$venv/installed-requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$venv/installed-requirements.txt"
fi
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.37.0 --quiet \
  configmap.yaml deployment.yaml service.yaml pdb.yaml hpa.yaml backend-headless.yaml
config=$(mktemp --suffix .toml)
trap 'rm -f "$config"' EXIT
"$venv/bin/python" - "$config" <<'PY'
import sys, yaml
with open("configmap.yaml") as f:
    data = yaml.safe_load(f)["data"]["grpcproxy.toml"]
open(sys.argv[1], "w").write(data)
PY
# (its DNS warning about names that only resolve inside a cluster is expected here)
"$binary" check-config "$config" >/dev/null 2>&1 || "$binary" check-config "$config"
echo "deploy/kubernetes: 6 manifests valid for Kubernetes 1.37, configuration checked"
