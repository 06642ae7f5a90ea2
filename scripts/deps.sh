#!/usr/bin/env bash
# Installs the Debian packages that building and testing sori need, and only
# those that are missing, and the npm packages of the JavaScript test clients.
# Idempotent; needs root (or sudo) when something is
# missing. Usage: scripts/deps.sh
set -euo pipefail

PKGS=(
  # build
  gcc make pkg-config clang libclang-rt-14-dev
  libuv1-dev libjansson-dev libssl-dev zlib1g-dev libsqlite3-dev libsodium-dev libpq-dev libhiredis-dev
  # tests (redis-server: the bus and cluster tests, through scripts/redis-test.sh;
  # openssl: the command that makes the TLS tests' certificates; valgrind: make soak)
  libcmocka-dev openssl valgrind python3 python3-websockets python3-pytest python3-requests redis-server
  # browser tests (driven by npm's playwright-core; never a downloaded browser)
  chromium
  # scripts/pg-test.sh: a throw-away server for the PostgreSQL store tests
  postgresql
  # cluster tests: tests/cluster/nginx.py runs /usr/sbin/nginx with deploy/nginx.conf
  # in a temp prefix (the package's own system service is never used)
  nginx
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# Node.js runs the JavaScript test clients (@stomp/stompjs); any node >= 18
# on PATH will do, else Debian's.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

install_apt() {
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "deps: run as root: apt-get install -y ${missing[*]}" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install_apt

# The npm packages of the test clients, pinned by tests/node/package-lock.json;
# reinstalled only when the lock file changed.
node_dir="$(dirname "$0")/../tests/node"
stamp="$node_dir/node_modules/.sori-lock-sha"
want=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "deps: npm ci in tests/node"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$stamp"
fi
