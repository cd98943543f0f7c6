#!/usr/bin/env bash
# Builds the repository's Dockerfile offline with buildah and checks that the image works: the
# image's configuration (non-root user, 0.0.0.0 addresses, ports, entrypoint), then the container
# itself, run with `buildah run --isolation chroot` in a network namespace of its own (only its
# loopback: nothing listens on the host's interfaces): /readyz answers 200, an OFREP evaluation
# and the Unleash mirror give the right answers, the server runs as a non-root user, and it stops
# on SIGTERM. Exits 0 only if all of that holds.
#
# Base images cannot be pulled here, so the Dockerfile's base images are substituted through its
# build arguments by two images made on the spot, offline:
#   - the builder: an empty root with this machine's /usr (compiler, perl, make, strip) and Rust
#     toolchain mounted read-only for the build, and the host's cargo registry (crates are not
#     downloaded: CARGO_NET_OFFLINE=true);
#   - the runtime: the files of Debian's libc6, libgcc-s1 and zlib1g copied from this machine
#     (what the binary needs; a distroless-like root).
# By default the binary is built in the `dev` profile with this checkout's target directory
# mounted, so the build reuses what `cargo build -p vexil` (test.sh's `cargo run`) left there;
# VEXIL_SMOKE_PROFILE=release builds what `docker build` builds.
#
# Needs root (buildah's storage, network namespaces); installs buildah with apt-get if missing.
# Environment: VEXIL_SMOKE_PROFILE (dev), VEXIL_SMOKE_STARTS (how many times the container is
# started and timed to ready; 1), VEXIL_SMOKE_KEEP=1 keeps the image (localhost/vexil-smoke:latest).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

profile="${VEXIL_SMOKE_PROFILE:-dev}"
starts="${VEXIL_SMOKE_STARTS:-1}"
keep="${VEXIL_SMOKE_KEEP:-0}"
ready_timeout=60     # seconds for the container to answer /readyz 200
build_timeout=2400   # seconds for the image build

fail() {
    echo "image-smoke: FAILED: $*" >&2
    exit 1
}
log() { echo "image-smoke: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (buildah's storage and a network namespace)"
missing=""
command -v buildah > /dev/null || missing="$missing buildah"
command -v curl > /dev/null || missing="$missing curl"
command -v ip > /dev/null || missing="$missing iproute2"
command -v readelf > /dev/null || missing="$missing binutils"
command -v dpkg > /dev/null || fail "needs a Debian host (the runtime image is made from its packages)"
if [ -n "$missing" ]; then
    log "installing$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing > /dev/null
fi

tag="smoke-$$"
builder_image="localhost/vexil-smoke-builder:$tag"
runtime_image="localhost/vexil-smoke-runtime:$tag"
image="localhost/vexil-smoke:$tag"
netns="vexil-smoke-$$"
containers=()
images=()
server_pid=""
run_pid=""

cleanup() {
    local status=$?
    set +e
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2> /dev/null
    [ -n "$run_pid" ] && kill -KILL "$run_pid" 2> /dev/null && wait "$run_pid" 2> /dev/null
    # Whatever still runs in the container's namespace (a server that never became ready).
    for pid in $(ip netns pids "$netns" 2> /dev/null); do kill -KILL "$pid" 2> /dev/null; done
    for c in "${containers[@]}"; do buildah rm "$c" > /dev/null 2>&1; done
    if [ "$keep" = 1 ] && [ "$status" = 0 ]; then
        buildah tag "$image" localhost/vexil-smoke:latest > /dev/null 2>&1
        log "kept the image as localhost/vexil-smoke:latest"
    fi
    for i in "${images[@]}"; do buildah rmi "$i" > /dev/null 2>&1; done
    ip netns del "$netns" 2> /dev/null
    rm -rf "$work"
    exit "$status"
}
work=$(mktemp -d)
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what the build mounts from this machine ---------------------------------------------------
sysroot=$(rustc --print sysroot)
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
cargo_home=$(cd "$cargo_home" && pwd -P)
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd -P)
host_triple=$(rustc -vV | sed -n 's/^host: //p')
log "crates for $host_triple into $cargo_home/registry (cargo fetch)"
cargo fetch --locked --target "$host_triple" > /dev/null 2>&1 ||
    cargo fetch --locked --target "$host_triple" # again, to show why

# --- the builder image: an empty root; /usr and the toolchain come from mounts -----------------
log "making the builder image (host toolchain $(rustc --version))"
c=$(buildah from scratch)
containers+=("$c")
root=$(buildah mount "$c")
for d in bin lib lib64 sbin; do
    if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d"; else fail "/$d is not a symbolic link (a Debian with merged /usr is needed)"; fi
done
mkdir -p "$root/usr" "$root/tmp" "$root/root" "$root/etc/ssl/certs" "$root/src"
mkdir -p "$root$sysroot" "$root$cargo_home/registry" "$root$target_dir"
chmod 1777 "$root/tmp"
cp -a /etc/alternatives "$root/etc/"
cp /etc/ld.so.cache /etc/ld.so.conf "$root/etc/"
[ -d /etc/ld.so.conf.d ] && cp -a /etc/ld.so.conf.d "$root/etc/"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" ||
    fail "no /etc/ssl/certs/ca-certificates.crt on this machine (apt-get install ca-certificates)"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
buildah umount "$c" > /dev/null
buildah config --env "PATH=$sysroot/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --env HOME=/root --env "CARGO_HOME=$cargo_home" --env "CARGO_TARGET_DIR=$target_dir" "$c"
buildah commit --quiet "$c" "$builder_image" > /dev/null
images+=("$builder_image")

# --- the runtime image: Debian's libc6, libgcc-s1 and zlib1g, as installed here -----------------
log "making the runtime image (libc6 libgcc-s1 zlib1g from this machine)"
c=$(buildah from scratch)
containers+=("$c")
root=$(buildah mount "$c")
for d in bin lib lib64 sbin; do ln -s "$(readlink "/$d")" "$root/$d"; done
mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/usr/lib64" "$root/usr/sbin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
dpkg -L libc6 libgcc-s1 zlib1g | while read -r f; do
    case "$f" in /usr/share/* | /etc/*) continue ;; esac
    if [ -f "$f" ] || [ -L "$f" ]; then
        if [ -d "$f" ]; then continue; fi
        dir=$(readlink -f "$(dirname "$f")")
        mkdir -p "$root$dir"
        cp -a "$f" "$root$dir/"
    fi
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
buildah umount "$c" > /dev/null
# As debian:12-slim has it.
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
buildah commit --quiet "$c" "$runtime_image" > /dev/null
images+=("$runtime_image")
for c in "${containers[@]}"; do buildah rm "$c" > /dev/null; done
containers=()

# --- the build: the repository's Dockerfile, unchanged ------------------------------------------
log "building the Dockerfile (profile $profile)"
build_start=$(date +%s)
timeout "$build_timeout" buildah build --isolation chroot --pull-never --quiet \
    --build-arg "RUST_IMAGE=$builder_image" --build-arg "RUNTIME_IMAGE=$runtime_image" \
    --build-arg "CARGO_PROFILE=$profile" --build-arg CARGO_NET_OFFLINE=true \
    --build-arg "WORKSPACE_DIR=$repo" \
    -v /usr:/usr:ro -v "$sysroot:$sysroot:ro" \
    -v "$cargo_home/registry:$cargo_home/registry" -v "$target_dir:$target_dir" \
    -t "$image" -f Dockerfile . > "$work/build.log" 2>&1 ||
    {
        tail -n 40 "$work/build.log" >&2
        fail "buildah build failed or took over ${build_timeout}s (the log's end is above)"
    }
images+=("$image")
log "built in $(($(date +%s) - build_start)) s; $(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image")"

# --- the image's configuration ------------------------------------------------------------------
buildah inspect --type image "$image" > "$work/inspect.json"
python3 - "$work/inspect.json" "$work/command" << 'EOF' || fail "the image's configuration is not as expected (above)"
import json, sys
config = json.load(open(sys.argv[1]))["OCIv1"]["config"]
env = dict(e.split("=", 1) for e in config.get("Env", []))
want = {
    "User": (config.get("User"), "65532:65532"),
    "Entrypoint": (config.get("Entrypoint"), ["vexil"]),
    "Cmd": (config.get("Cmd"), ["serve"]),
    "ExposedPorts": (sorted(config.get("ExposedPorts", {})), ["8013/tcp", "8014/tcp", "8015/tcp"]),
    "VEXIL_GRPC_ADDR": (env.get("VEXIL_GRPC_ADDR"), "0.0.0.0:8013"),
    "VEXIL_SYNC_ADDR": (env.get("VEXIL_SYNC_ADDR"), "0.0.0.0:8015"),
    "VEXIL_HTTP_ADDR": (env.get("VEXIL_HTTP_ADDR"), "0.0.0.0:8014"),
    "VEXIL_CACHE_DIR": (env.get("VEXIL_CACHE_DIR"), "/var/cache/vexil"),
}
bad = [f"{k}: {got!r}, expected {exp!r}" for k, (got, exp) in want.items() if got != exp]
for b in bad:
    print("image-smoke: " + b, file=sys.stderr)
if bad:
    sys.exit(1)
# The command the container runs: buildah run takes it explicitly.
print("\n".join(config["Entrypoint"] + config["Cmd"]), file=open(sys.argv[2], "w"))
EOF
mapfile -t command < "$work/command"
c=$(buildah from --pull-never "$image")
containers+=("$c")
root=$(buildah mount "$c")
[ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || fail "the image has no CA certificates"
[ "$(stat -c %u "$root/var/cache/vexil")" = 65532 ] || fail "/var/cache/vexil is not owned by 65532"
[ -x "$root/usr/local/bin/vexil" ] || fail "the image has no /usr/local/bin/vexil"
if readelf -SW "$root/usr/local/bin/vexil" | grep -qE ' \.(symtab|debug_info) '; then
    fail "the binary is not stripped (it has a symbol table or debug sections)"
fi
buildah umount "$c" > /dev/null
log "configuration: user 65532:65532, 0.0.0.0:8013 and :8014, cache /var/cache/vexil, CA certificates"

# --- the container: started in a network namespace of its own -----------------------------------
ip netns add "$netns"
ip netns exec "$netns" ip link set lo up
in_ns() { ip netns exec "$netns" "$@"; }
http() { in_ns curl -s --max-time 5 "$@"; }

for run in $(seq 1 "$starts"); do
    start_ns=$(date +%s%N)
    in_ns buildah run --isolation chroot "$c" -- "${command[@]}" > "$work/server.log" 2>&1 &
    run_pid=$!
    deadline=$(($(date +%s) + ready_timeout))
    until [ "$(http -o /dev/null -w '%{http_code}' http://127.0.0.1:8014/readyz)" = 200 ]; do
        if ! kill -0 "$run_pid" 2> /dev/null; then
            cat "$work/server.log" >&2
            fail "the container exited before it was ready (its output is above)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            cat "$work/server.log" >&2
            fail "/readyz did not answer 200 within ${ready_timeout}s"
        fi
        sleep 0.02
    done
    ready_ms=$((($(date +%s%N) - start_ns) / 1000000))
    log "start $run: ready (/readyz 200) after $ready_ms ms"

    # The one process listening on 8014 in the namespace is the server.
    server_pid=$(in_ns ss -Hltnp 'sport = :8014' | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2)
    [ -n "$server_pid" ] || fail "no process listens on 8014"
    uid=$(awk '/^Uid:/ { print $2 }' "/proc/$server_pid/status")
    [ "$uid" = 65532 ] || fail "the server runs as uid $uid, not 65532"
    in_ns ss -Hltn | grep -q '0.0.0.0:8013' || fail "gRPC does not listen on 0.0.0.0:8013"
    in_ns ss -Hltn | grep -q '0.0.0.0:8015' || fail "flagd's sync service does not listen on 0.0.0.0:8015"

    if [ "$run" = 1 ]; then
        # The embedded example: user-42 of acme.io is in the payments team (flags/checkout).
        body=$(http -X POST -H 'content-type: application/json' \
            -d '{"context":{"targetingKey":"user-42","email":"Dana@ACME.io"}}' \
            http://127.0.0.1:8014/ns/checkout/ofrep/v1/evaluate/flags/new-checkout)
        grep -q '"value":true' <<< "$body" && grep -q '"reason":"TARGETING_MATCH"' <<< "$body" ||
            fail "OFREP new-checkout for user-42: unexpected answer: $body"
        # ... and user-42 without attributes is outside the 25 % rollout.
        body=$(http -X POST -H 'content-type: application/json' \
            -d '{"context":{"targetingKey":"user-42"}}' \
            http://127.0.0.1:8014/ns/checkout/ofrep/v1/evaluate/flags/new-checkout)
        grep -q '"value":false' <<< "$body" ||
            fail "OFREP new-checkout for user-42 without attributes: unexpected answer: $body"
        # The Unleash mirror of the default namespace: dark-mode is fully on (flags/web.yaml).
        code=$(http -o "$work/unleash.json" -w '%{http_code}' http://127.0.0.1:8014/api/client/features)
        [ "$code" = 200 ] && grep -q '"name":"dark-mode","type":"release","description":"[^"]*","enabled":true' "$work/unleash.json" ||
            fail "the Unleash mirror answered $code: $(head -c 300 "$work/unleash.json")"
        log "OFREP and the Unleash mirror answer from the embedded example; uid $uid;" \
            "resident memory $(awk '/^VmRSS:/ { printf "%.1f MB", $2 / 1024 }' "/proc/$server_pid/status")"
    fi

    kill -TERM "$server_pid"
    deadline=$(($(date +%s) + 30))
    while kill -0 "$server_pid" 2> /dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "the server did not stop within 30 s of SIGTERM"
        sleep 0.1
    done
    server_pid=""
    wait "$run_pid" || fail "the container exited with status $? after SIGTERM (its output: $(tail -n 5 "$work/server.log"))"
    run_pid=""
done

log "OK: the image builds, runs as 65532 and serves"
