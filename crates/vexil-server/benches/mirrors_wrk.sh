#!/usr/bin/env bash
# Loopback load on the read-only mirrors with wrk: `GET /api/client/features` (Unleash, spec
# 6.1.0 client) and Flipper's `GET /flipper/api/features`, full bodies and 304s, against
# `vexil serve` (release build) on a generated 350-flag repository. Results go in BENCHMARKS.md.
#
# usage: crates/vexil-server/benches/mirrors_wrk.sh [SECONDS]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/../../.."
seconds="${1:-10}"
command -v wrk > /dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

cargo build --release --locked -q -p vexil
vexil="${CARGO_TARGET_DIR:-target}/release/vexil"
work="$(mktemp -d)"
server=""
trap '[ -n "$server" ] && kill "$server" 2> /dev/null; rm -rf "$work"' EXIT

# 350 flags, shaped like a real repository: mostly booleans (actors, groups, percentages, or
# attribute rules), a fifth of them serving strings by rules and splits.
python3 - "$work/flags" <<'PY'
import os, sys
root = sys.argv[1]
os.makedirs(root)
for f in range(10):
    out = ["segments:",
           f"  staff-{f}:", "    all:", "      - { attr: email, ends_with: \"@example.com\", ignore_case: true }",
           "flags:"]
    for i in range(35):
        n = f * 35 + i
        ids = ", ".join(f"User;{n * 7 + k}" for k in range(20))
        kind = n % 5
        if kind in (0, 1):
            out += [f"  feature-{n}:", f"    description: Feature {n} of team {f}",
                    "    rules:", f"      - {{ ids: [{ids}], serve: true }}",
                    f"      - {{ rollout: {n % 100}, bucketing: unleash }}"]
        elif kind == 2:
            out += [f"  feature-{n}:", "    rules:", "      - { groups: [admins, staff], serve: true }",
                    f"      - {{ rollout: {(n * 3) % 100} }}"]
        elif kind == 3:
            out += [f"  feature-{n}:", "    rules:", f"      - {{ segment: staff-{f}, serve: true }}",
                    "      - { when: [{ attr: plan, in: [pro, enterprise] }, { attr: seats, gte: 10 }], serve: true }"]
        else:
            out += [f"  feature-{n}:", "    type: string", "    bucketing: unleash",
                    "    variants: { a: alpha, b: beta, c: gamma }", "    default: a", "    rules:",
                    f"      - {{ segment: staff-{f}, serve: c }}", "      - split: { a: 50, b: 25, c: 25 }"]
    with open(os.path.join(root, f"team-{f}.yaml"), "w") as fh:
        fh.write("\n".join(out) + "\n")
PY

port=$((20000 + RANDOM % 20000))
"$vexil" serve "$work/flags" --grpc-addr 127.0.0.1:0 --http-addr "127.0.0.1:$port" \
    --log warn > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break
    sleep 0.1
done

base="http://127.0.0.1:$port"
unleash_spec="Unleash-Client-Spec: 6.1.0"
etag() { curl -fsI -H "$2" "$base$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}'; }
size() { curl -fs -H "$2" "$base$1" | wc -c; }

run() { # name path header [if-none-match] [accept-encoding]
    local name="$1" path="$2" hdr="$3" inm="${4:-}" enc="${5:-}"
    local args=(-t1 -c32 "-d${seconds}s" --latency -H "$hdr")
    [ -n "$inm" ] && args+=(-H "If-None-Match: $inm")
    [ -n "$enc" ] && args+=(-H "Accept-Encoding: $enc")
    local out
    out="$(wrk "${args[@]}" "$base$path")"
    local rps p99 non2xx
    rps="$(awk '/Requests\/sec/{print $2}' <<< "$out")"
    p99="$(awk '$1=="99%"{print $2}' <<< "$out")"
    non2xx="$(awk '/Non-2xx or 3xx/{print $5}' <<< "$out")"
    printf '%-34s %12s req/s   p99 %8s   non-2xx/3xx %s\n' "$name" "$rps" "$p99" "${non2xx:-0}"
}

flipper_hdr="Accept: application/json"
gz() { curl -fs -H "$2" -H "Accept-Encoding: gzip" "$base$1" | wc -c; }
echo "unleash body: $(size /api/client/features "$unleash_spec") bytes ($(gz /api/client/features "$unleash_spec") gzipped); flipper body: $(size /flipper/api/features "$flipper_hdr") bytes ($(gz /flipper/api/features "$flipper_hdr") gzipped)"
run "unleash /client/features 200" /api/client/features "$unleash_spec"
run "unleash /client/features 200 gzip" /api/client/features "$unleash_spec" "" gzip
run "unleash /client/features 304" /api/client/features "$unleash_spec" "$(etag /api/client/features "$unleash_spec")"
run "flipper /features 200" /flipper/api/features "$flipper_hdr"
run "flipper /features 200 gzip" /flipper/api/features "$flipper_hdr" "" gzip
run "flipper /features 304" /flipper/api/features "$flipper_hdr" "$(etag /flipper/api/features "$flipper_hdr")"
