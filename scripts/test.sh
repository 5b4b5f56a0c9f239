#!/usr/bin/env bash
# The test command: installs what the tests need and is missing (Node.js 20 or
# newer for the JavaScript client's tests, and its npm devDependencies if it has
# any; Debian's prosody for tests/xmpp.rs), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

node_ok() {
    command -v node >/dev/null 2>&1 &&
        [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]
}

if ! node_ok; then
    echo "installing Node.js (needed by tests/js_client.rs)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq nodejs npm
    node_ok || { echo "Node.js 20 or newer is needed; apt installed $(node --version 2>/dev/null || echo none)" >&2; exit 1; }
fi

if ! command -v prosody >/dev/null 2>&1; then
    echo "installing prosody (needed by tests/xmpp.rs)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq prosody
fi

if grep -q '"devDependencies"' web/client/package.json; then
    (cd web/client && npm ci --no-audit --no-fund)
fi

cargo test --workspace "$@"
