#!/usr/bin/env bash
# Installs the Debian packages that building and testing sori need, and only
# those that are missing. Idempotent; needs root (or sudo) when something is
# missing. Usage: scripts/deps.sh
set -euo pipefail

PKGS=(
  # build
  gcc make pkg-config clang libclang-rt-14-dev
  libuv1-dev libjansson-dev libssl-dev zlib1g-dev libsqlite3-dev libsodium-dev
  # tests
  libcmocka-dev python3 python3-websockets python3-pytest python3-requests
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
echo "deps: done"
