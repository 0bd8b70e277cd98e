#!/usr/bin/env bash
# Installs the interop suite's peers, pinned: Python grpcio and friends in a virtualenv
# (interop/python/.venv, from requirements.txt) and Node @grpc/grpc-js and friends
# (interop/node/node_modules, from package-lock.json). Safe to run again: it reinstalls
# only what changed. A missing tool fails loudly.
# Usage: bash interop/install.sh
set -euo pipefail
cd "$(dirname "$0")"
source ../scripts/peers.sh

command -v python3 >/dev/null || install_peers python3 python3-venv
command -v node >/dev/null && command -v npm >/dev/null || install_peers nodejs npm
python3 -c 'import venv' 2>/dev/null || install_peers python3-venv

venv=python/.venv
if ! cmp -s python/requirements.txt "$venv/installed-requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r python/requirements.txt
  cp python/requirements.txt "$venv/installed-requirements.txt"
fi
"$venv/bin/python" -c 'import grpc, grpc_tools, grpc_health, grpc_reflection, grpc_status'

if ! cmp -s node/package-lock.json node/node_modules/.installed-package-lock.json; then
  (cd node && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  cp node/package-lock.json node/node_modules/.installed-package-lock.json
fi
(cd node && node -e "require('@grpc/grpc-js'); require('@grpc/proto-loader'); require('@grpc/reflection'); require('grpc-health-check'); require('grpc-web'); require('xhr2'); require('puppeteer-core')")
echo "interop peers: grpcio $("$venv/bin/python" -c 'import grpc; print(grpc.__version__)'), grpc-js $(node -p "require('./node/node_modules/@grpc/grpc-js/package.json').version")"

# The grpc-go backend (interop/go/server.go), built from Debian's grpc-go: no module
# download, the packages' sources are the GOPATH.
command -v go >/dev/null && [ -d /usr/share/gocode/src/google.golang.org/grpc ] || install_peers golang-go golang-google-grpc-dev
if [ ! -x go/grpc-go-server ] || [ go/server.go -nt go/grpc-go-server ]; then
  (cd go && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="${TMPDIR:-/tmp}/grpcproxy-interop-gocache" go build -o grpc-go-server server.go)
fi
echo "grpc-go backend: $(dpkg-query -W -f '${Version}' golang-google-grpc-dev) ($(go version | cut -d' ' -f3))"
