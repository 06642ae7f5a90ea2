#!/usr/bin/env bash
# Runs the Nchan peer in the foreground by hand: bench/peers/nchan/run.sh [PORT]
# (default 8080). Then, from another shell:
#   build/sori bench --peer-protocol nchan --url ws://127.0.0.1:PORT/chat/ ...
# Needs Debian's nginx and libnginx-mod-nchan (apt-get install nginx libnginx-mod-nchan).
set -euo pipefail
port=${1:-8080}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/sori-nchan.XXXXXX)
trap 'rm -rf "$dir"' EXIT
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" "$here/nginx.conf.in" >"$dir/nginx.conf"
echo "nchan on ws://127.0.0.1:$port/chat/<room> (prefix $dir)" >&2
nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
