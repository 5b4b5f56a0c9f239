#!/usr/bin/env bash
# The test command: installs what the tests need and is missing (Node.js 20 or
# newer for the JavaScript tests, Chromium for the browser test, Debian's prosody
# for tests/xmpp.rs, nats-server for tests/bench_clients.rs, and the npm packages of web/client, web/test,
# tests/socketio — the reference socket.io-client 1.x — and web/bench — the socket.io 4
# relay of benches/transports.rs --transports), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

node_ok() {
    command -v node >/dev/null 2>&1 &&
        [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]
}

if ! node_ok; then
    echo "installing Node.js (needed by tests/js_client.rs and tests/browser.rs)" >&2
    apt_install nodejs npm
    node_ok || { echo "Node.js 20 or newer is needed; apt installed $(node --version 2>/dev/null || echo none)" >&2; exit 1; }
fi

if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
    echo "installing Chromium (needed by tests/browser.rs and tests/dashboard.rs)" >&2
    apt_install chromium
fi

if ! command -v prosody >/dev/null 2>&1; then
    echo "installing prosody (needed by tests/xmpp.rs)" >&2
    apt_install prosody
fi

if ! command -v nats-server >/dev/null 2>&1; then
    echo "installing nats-server (the peer of benches/transports.rs, checked by tests/bench_clients.rs)" >&2
    apt_install nats-server
fi

# npm ci where the lock file changed since the last install
for pkg in web/client web/test tests/socketio web/bench; do
    grep -Eq '"(devD|d)ependencies"' "$pkg/package.json" || continue
    if [ ! -d "$pkg/node_modules" ] || [ "$pkg/package-lock.json" -nt "$pkg/node_modules" ] ||
        [ "$pkg/package.json" -nt "$pkg/node_modules" ]; then
        (cd "$pkg" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        touch "$pkg/node_modules"
    fi
done

cargo test --workspace "$@"
