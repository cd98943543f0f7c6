#!/usr/bin/env bash
# In-process evaluation in flagd's Python and Node providers (definitions synced from Vexil's
# flagd sync service, evaluated locally) against a ResolveBoolean round trip to Vexil (the same
# providers in rpc mode), same flag and context, in one run. A release `vexil serve` serves the
# example repository flags/ on 127.0.0.1; each client times ROUNDS sequential evaluations of
# each kind after a warm-up and prints the mean per evaluation and the ratio rpc / in-process.
# Results go in BENCHMARKS.md.
#
# usage: crates/vexil-server/benches/flagd_in_process.sh [ROUNDS] [FLAG]
#   (defaults: 5000 rounds, `cookie-consent-v2`: a boolean flag with a segment and two rules)
#   environment: VEXIL_BIN: a vexil binary to use instead of building one.
#   needs python3 (with venv) and node/npm: the clients are installed as the tests install them
#   (a venv under target/conformance from tests/conformance/requirements.txt, `npm ci` in
#   tests/conformance/node).
set -euo pipefail
cd "$(dirname "$0")/../../.."
. crates/vexil-server/benches/common.sh
rounds="${1:-5000}"
flag="${2:-cookie-consent-v2}"

missing=()
command -v python3 > /dev/null || missing+=(python3 python3-venv)
command -v npm > /dev/null || missing+=(nodejs npm)
install_missing "${missing[@]}"
venv=target/conformance/venv
if ! cmp -s tests/conformance/requirements.txt "$venv/vexil-requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt
    cp tests/conformance/requirements.txt "$venv/vexil-requirements.txt"
fi
if ! cmp -s tests/conformance/node/package-lock.json tests/conformance/node/node_modules/.vexil-lock.json; then
    (cd tests/conformance/node && npm ci --no-audit --no-fund --loglevel=error)
    cp tests/conformance/node/package-lock.json tests/conformance/node/node_modules/.vexil-lock.json
fi
vexil="$(vexil_binary)"
work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2> /dev/null && wait "$server" 2> /dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The providers use one address for both modes: the gRPC port serves the sync service too.
"$vexil" serve flags --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --sync-addr off --log warn \
    > "$work/serve.out" 2> "$work/serve.err" &
server=$!
for _ in $(seq 100); do
    grep -q "gRPC on" "$work/serve.out" 2> /dev/null && break
    sleep 0.1
done
grpc="$(sed -n 's/.*gRPC on \([0-9.:]*\),.*/\1/p' "$work/serve.out")"
[ -n "$grpc" ] || { cat "$work/serve.err" >&2; exit 1; }
echo "vexil $("$vexil" --version | cut -d' ' -f2) on $grpc; flag $flag; $rounds evaluations each"
"$venv/bin/python" tests/conformance/flagd_in_process.py bench "$grpc" "$flag" "$rounds"
node tests/conformance/node/flagd_in_process.js bench "$grpc" "$flag" "$rounds"
