#!/usr/bin/env bash
# The gRPC request path against its limit: unary vexil.v1 `Evaluate` next to an empty RPC
# (grpc.health.v1 `Check` of the server: same port, connection handling, HTTP/2 and gRPC
# framing, no token gate, no evaluation), driven by the same h2load command, alternately, in
# one run. A release `vexil serve` serves the example repository flags/ on 127.0.0.1.
# Prints each run's requests/s, the Evaluate/Check ratio of each round, and the medians.
# The issue's target: Evaluate at 0.9 of Check or better. Results go in BENCHMARKS.md.
#
# usage: crates/vexil-server/benches/grpc_limit.sh [SECONDS] [ROUNDS]   (defaults: 10 s, 3 rounds)
#   environment: VEXIL_H2LOAD_CONNECTIONS (default 2) and VEXIL_H2LOAD_STREAMS (per connection,
#   default 16: 32 calls in flight, as in the load bench); VEXIL_BIN: a vexil binary to use
#   instead of building one.
#   needs h2load, curl and python3: apt-get install -y nghttp2-client curl python3
#   (installed when missing if run as root on Debian)
set -euo pipefail
cd "$(dirname "$0")/../../.."
. crates/vexil-server/benches/common.sh
seconds="${1:-10}"
rounds="${2:-3}"
conns="${VEXIL_H2LOAD_CONNECTIONS:-2}"
streams="${VEXIL_H2LOAD_STREAMS:-16}"

missing=()
command -v h2load > /dev/null || missing+=(nghttp2-client)
command -v curl > /dev/null || missing+=(curl)
command -v python3 > /dev/null || missing+=(python3)
install_missing "${missing[@]}"
vexil="$(vexil_binary)"
work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2> /dev/null && wait "$server" 2> /dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Request bodies: a 5-byte gRPC frame header (uncompressed, big-endian length) and the message.
# Evaluate: `new-navigation` (its first rule, segment early-adopters, includes internal, which
# includes staff: e-mail ends with @acme.io) for a context of a key and three attributes.
# Check: an empty HealthCheckRequest (service "": the server as a whole).
python3 - "$work" <<'PY'
import struct, sys
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
def field(number, payload):  # a length-delimited field
    return varint(number << 3 | 2) + varint(len(payload)) + payload
def text_value(s):  # google.protobuf.Value{string_value}
    return field(3, s.encode())
attributes = {"email": "dev@acme.io", "country": "FR", "plan": "pro"}
context = field(1, b"user-1") + b"".join(
    field(2, field(1, k.encode()) + field(2, text_value(v))) for k, v in attributes.items())
evaluate = field(2, b"new-navigation") + field(3, context)  # EvaluateRequest{flag, context}
frame = lambda m: b"\0" + struct.pack(">I", len(m)) + m
open(sys.argv[1] + "/evaluate.bin", "wb").write(frame(evaluate))
open(sys.argv[1] + "/check.bin", "wb").write(frame(b""))
PY

port=$((20000 + RANDOM % 20000))
"$vexil" serve flags --grpc-addr "127.0.0.1:$port" --http-addr 127.0.0.1:0 --log warn \
    --drain-window 0s --drain-timeout 2s > "$work/serve.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
    curl -m 5 -fs --http2-prior-knowledge -o /dev/null -H 'content-type: application/grpc' \
        -H 'te: trailers' --data-binary "@$work/check.bin" "$base/grpc.health.v1.Health/Check" \
        && break
    sleep 0.1
done

# Each call answers as expected before it is timed: grpc-status 0 (in the trailers), Check
# SERVING (HealthCheckResponse{status: 1} = 08 01), Evaluate true by the first rule
# (EvaluateResponse.value = vexil.v1.Value{bool_value: true} = 22 02 08 01, reason
# TARGETING_MATCH = 30 02).
check_call() { # path body expected-hex
    local hex
    curl -m 5 -fs --http2-prior-knowledge -D "$work/headers" -o "$work/answer" \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary "@$2" "$base$1"
    hex="$(od -An -tx1 -v "$work/answer" | tr -d ' \n')"
    if ! tr -d '\r' < "$work/headers" | grep -qi '^grpc-status: 0$' || [[ "$hex" != *"$3"* ]]; then
        echo "unexpected answer to $1:" >&2
        cat "$work/headers" >&2
        echo "$hex" >&2
        exit 1
    fi
}
check_call /grpc.health.v1.Health/Check "$work/check.bin" 0801
check_call /vexil.v1.FlagService/Evaluate "$work/evaluate.bin" 220208012a026f6e3002

# One h2load run; prints its requests/s. Every request must succeed (HTTP 2xx, none failed,
# errored or timed out; the answers' gRPC status was checked above: h2load reads no trailers).
h2() { # path body
    local out rps finished succeeded bad
    out="$(h2load -t1 -c"$conns" -m"$streams" -D"$seconds" --warm-up-time=1 \
        -H 'content-type: application/grpc' -H 'te: trailers' --data="$2" "$base$1" 2>&1)"
    rps="$(awk '/^finished in/{gsub(",", "", $4); print $4}' <<< "$out")"
    # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
    finished="$(awk '/^requests:/{print $6}' <<< "$out")"
    succeeded="$(awk '/^requests:/{print $8}' <<< "$out")"
    bad="$(awk '/^requests:/{print $10 + $12 + $14}' <<< "$out")"
    if [ -z "$rps" ] || [ -z "$finished" ] || [ "$finished" = 0 ] \
        || [ "$finished" != "$succeeded" ] || [ "$bad" != 0 ]; then
        echo "h2load failed on $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$rps"
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "$("$vexil" --version 2>/dev/null || true) on flags/; h2load -t1 -c$conns -m$streams -D$seconds (1 s warm-up); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %18s %18s %8s\n' round "Check req/s" "Evaluate req/s" ratio
checks=() evals=() ratios=()
for round in $(seq "$rounds"); do
    c="$(h2 /grpc.health.v1.Health/Check "$work/check.bin")"
    e="$(h2 /vexil.v1.FlagService/Evaluate "$work/evaluate.bin")"
    r="$(awk -v e="$e" -v c="$c" 'BEGIN {printf "%.3f", e / c}')"
    checks+=("$c") evals+=("$e") ratios+=("$r")
    printf '%-6s %18s %18s %8s\n' "$round" "$c" "$e" "$r"
done
printf '%-6s %18s %18s %8s\n' median "$(printf '%s\n' "${checks[@]}" | median)" \
    "$(printf '%s\n' "${evals[@]}" | median)" "$(printf '%s\n' "${ratios[@]}" | median)"
echo "(target: Evaluate/Check >= 0.9; load after: $(cut -d' ' -f1-3 /proc/loadavg))"
