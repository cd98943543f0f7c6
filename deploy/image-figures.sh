#!/usr/bin/env bash
# The image's figures for BENCHMARKS.md: the binary's size, and for N starts (default 5) the time
# from start to the first /readyz 200 and the server's resident memory after 200 OFREP
# evaluations, one read of each mirror and one of /metrics; first as a container
# (`buildah run --isolation chroot`), then the same binary run directly as uid 65532. Everything
# runs in a network namespace of its own and talks to 127.0.0.1 only.
#
# Needs root and the image deploy/image-smoke.sh keeps with VEXIL_SMOKE_KEEP=1:
#   VEXIL_SMOKE_PROFILE=release VEXIL_SMOKE_KEEP=1 deploy/image-smoke.sh && deploy/image-figures.sh
set -euo pipefail
image="${1:-localhost/vexil-smoke:latest}"
runs="${2:-5}"
netns="vexil-figures-$$"
c=""
bg=""
cleanup() {
    set +e
    [ -n "$bg" ] && kill -KILL "$bg" 2> /dev/null && wait "$bg" 2> /dev/null
    ip netns del "$netns" 2> /dev/null
    if [ -n "$c" ]; then
        buildah umount "$c" > /dev/null
        buildah rm "$c" > /dev/null
    fi
    rm -rf "$work"
}
work=$(mktemp -d)
trap cleanup EXIT

c=$(buildah from --pull-never "$image")
root=$(buildah mount "$c")
echo "binary: $(stat -c %s "$root/usr/local/bin/vexil") bytes; image: $(buildah images --format '{{.Size}}' "$image")"
ip netns add "$netns"
ip netns exec "$netns" ip link set lo up
http() { ip netns exec "$netns" curl -s --max-time 2 "$@"; }

for mode in container binary; do
    for i in $(seq 1 "$runs"); do
        t0=$(date +%s%N)
        if [ "$mode" = container ]; then
            ip netns exec "$netns" buildah run --isolation chroot "$c" -- vexil serve > "$work/log" 2>&1 &
        else
            (cd / && exec ip netns exec "$netns" env VEXIL_GRPC_ADDR=0.0.0.0:8013 \
                VEXIL_HTTP_ADDR=0.0.0.0:8014 VEXIL_CACHE_DIR="$work/cache" \
                setpriv --reuid=65532 --regid=65532 --clear-groups "$root/usr/local/bin/vexil" serve) > "$work/log" 2>&1 &
        fi
        bg=$!
        deadline=$(($(date +%s) + 30))
        until [ "$(http -o /dev/null -w '%{http_code}' http://127.0.0.1:8014/readyz)" = 200 ]; do
            [ "$(date +%s)" -lt "$deadline" ] || { cat "$work/log" >&2; echo "not ready within 30 s" >&2; exit 1; }
            sleep 0.005
        done
        t1=$(date +%s%N)
        pid=$(ip netns exec "$netns" ss -Hltnp 'sport = :8014' | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2)
        for j in $(seq 1 200); do
            http -o /dev/null -X POST -H 'content-type: application/json' \
                -d "{\"context\":{\"targetingKey\":\"user-$j\"}}" \
                http://127.0.0.1:8014/ns/checkout/ofrep/v1/evaluate/flags/new-checkout
        done
        http -o /dev/null http://127.0.0.1:8014/api/client/features
        http -o /dev/null http://127.0.0.1:8014/flipper/api/features
        http -o /dev/null http://127.0.0.1:8014/metrics
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
        echo "$mode start $i: ready after $(((t1 - t0) / 1000000)) ms; VmRSS $rss kB, VmHWM $hwm kB"
        kill -TERM "$pid"
        wait "$bg" || true
        bg=""
    done
done
