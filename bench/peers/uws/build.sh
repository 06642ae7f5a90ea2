#!/usr/bin/env bash
# Builds the uWebSockets peer into build/peers/uws/uws-chat from sources that
# are fetched at bench time and never committed: the bare git mirrors of
# uNetworking/uWebSockets and uNetworking/uSockets (UWS_MIRROR, default
# /work/.mirror; each holds OWNER+NAME/repo). uSockets is taken at the commit
# that uWebSockets pins as its submodule when the mirror has it, else HEAD.
# Single-threaded, no TLS (LIBUS_NO_SSL), g++ -O2 -std=c++20, zlib and
# nlohmann::json from Debian.
# Exit 0 built (or up to date), 3 skipped (no sources), 1 failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
MIRROR=${UWS_MIRROR:-/work/.mirror}
OUT=$ROOT/build/peers/uws
UWS_GIT=$MIRROR/uNetworking+uWebSockets/repo
USOCK_GIT=$MIRROR/uNetworking+uSockets/repo

if [ ! -d "$UWS_GIT" ] || [ ! -d "$USOCK_GIT" ]; then
    echo "uws peer: skipped: no uWebSockets/uSockets sources under $MIRROR (set UWS_MIRROR)" >&2
    exit 3
fi
for h in /usr/include/nlohmann/json.hpp /usr/include/zlib.h; do
    if [ ! -f "$h" ]; then
        if [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nlohmann-json3-dev zlib1g-dev >&2
        else
            echo "uws peer: needs nlohmann-json3-dev and zlib1g-dev (apt-get install)" >&2
            exit 1
        fi
        break
    fi
done

uws_rev=$(git --git-dir="$UWS_GIT" rev-parse HEAD)
usock_rev=$(git --git-dir="$UWS_GIT" ls-tree HEAD uSockets | awk '{print $3}')
if [ -z "$usock_rev" ] || ! git --git-dir="$USOCK_GIT" cat-file -e "$usock_rev^{commit}" 2>/dev/null; then
    usock_rev=$(git --git-dir="$USOCK_GIT" rev-parse HEAD)
fi
stamp="$uws_rev $usock_rev $(cat "$ROOT/bench/peers/uws/server.cpp" "$0" | sha1sum | cut -c1-40)"
if [ -x "$OUT/uws-chat" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi

rm -rf "$OUT/src" "$OUT/obj"
mkdir -p "$OUT/src/uWebSockets" "$OUT/src/uSockets" "$OUT/obj"
git --git-dir="$UWS_GIT" archive "$uws_rev" | tar -x -C "$OUT/src/uWebSockets"
git --git-dir="$USOCK_GIT" archive "$usock_rev" | tar -x -C "$OUT/src/uSockets"

CFLAGS="-O2 -DLIBUS_NO_SSL"
for f in "$OUT"/src/uSockets/src/*.c "$OUT"/src/uSockets/src/eventing/*.c "$OUT"/src/uSockets/src/crypto/*.c; do
    [ -f "$f" ] || continue
    gcc $CFLAGS -std=c11 -I"$OUT/src/uSockets/src" -c "$f" -o "$OUT/obj/$(basename "$f" .c).o"
done
ar rcs "$OUT/obj/uSockets.a" "$OUT"/obj/*.o
g++ -O2 -std=c++20 -DLIBUS_NO_SSL -I"$OUT/src/uWebSockets/src" -I"$OUT/src/uSockets/src" \
    "$ROOT/bench/peers/uws/server.cpp" "$OUT/obj/uSockets.a" -lz -o "$OUT/uws-chat.tmp"
mv "$OUT/uws-chat.tmp" "$OUT/uws-chat"
echo "$stamp" > "$OUT/stamp"
printf 'uWebSockets %s (%s), uSockets %s (%s)\n' \
    "$(git --git-dir="$UWS_GIT" describe --tags "$uws_rev" 2>/dev/null || echo "${uws_rev:0:12}")" "$uws_rev" \
    "$(git --git-dir="$USOCK_GIT" describe --tags "$usock_rev" 2>/dev/null || echo "${usock_rev:0:12}")" "$usock_rev" \
    > "$OUT/version"
echo "uws peer: built $OUT/uws-chat ($(cat "$OUT/version"))" >&2
