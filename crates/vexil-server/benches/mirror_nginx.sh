#!/usr/bin/env bash
# The Unleash mirror against its limit: `GET /api/client/features` from a release `vexil serve`
# next to nginx serving the same bytes from a file (a minimal configuration: sendfile, etag on,
# no access log; workers: one per core), driven by the same wrk command, alternately, in one
# run: the full body, and 304s (each server sent its own ETag in If-None-Match). Everything on
# 127.0.0.1.
# Prints each run's requests/s and bytes per response, the vexil/nginx ratio of each round, and
# the medians. The issue's target: 0.9 of nginx or better. Results go in BENCHMARKS.md.
#
# usage: crates/vexil-server/benches/mirror_nginx.sh [SECONDS] [ROUNDS] [SOURCE]
#   (defaults: 10 s, 3 rounds, the example repository flags/)
#   environment: VEXIL_WRK_CONNECTIONS (default 32); VEXIL_BIN: a vexil binary to use instead
#   of building one; VEXIL_NGINX_TUNED=1: nginx also keeps the file open (open_file_cache)
#   and never closes a keep-alive connection (keepalive_requests), a faster limit.
#   needs nginx, wrk and curl: apt-get install -y nginx wrk curl
#   (installed when missing if run as root on Debian; no nginx service is started)
set -euo pipefail
cd "$(dirname "$0")/../../.."
. crates/vexil-server/benches/common.sh
seconds="${1:-10}"
rounds="${2:-3}"
source_dir="${3:-flags}"
conns="${VEXIL_WRK_CONNECTIONS:-32}"
spec="Unleash-Client-Spec: 5.0.0"

nginx_bin="$(command -v nginx || true)"
[ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx
missing=()
[ -n "$nginx_bin" ] || missing+=(nginx)
command -v wrk > /dev/null || missing+=(wrk)
command -v curl > /dev/null || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
    # Debian starts the packaged nginx service where it can; this script never uses it.
    install_missing "${missing[@]}"
    nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
fi
vexil="$(vexil_binary)"
work="$(mktemp -d)"
server=""
nginx_pid=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2> /dev/null && wait "$server" 2> /dev/null || true; fi
    if [ -n "$nginx_pid" ]; then
        kill "$nginx_pid" 2> /dev/null && wait "$nginx_pid" 2> /dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# nginx's workers run as nobody when started by root: they must read the body.
chmod 755 "$work"

free_port() { echo $((20000 + RANDOM % 20000)); }
vport="$(free_port)"
nport="$(free_port)"
while [ "$nport" = "$vport" ]; do nport="$(free_port)"; done

"$vexil" serve "$source_dir" --grpc-addr 127.0.0.1:0 --http-addr "127.0.0.1:$vport" --log warn \
    --drain-window 0s --drain-timeout 2s > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -m 5 -fs "http://127.0.0.1:$vport/readyz" > /dev/null 2>&1 && break
    sleep 0.1
done
path=/api/client/features
vurl="http://127.0.0.1:$vport$path"
nurl="http://127.0.0.1:$nport$path"

# The body nginx serves: vexil's own, byte for byte.
mkdir -p "$work/www/api/client" "$work/tmp"
curl -m 5 -fs -H "$spec" "$vurl" > "$work/www/api/client/features"
chmod 644 "$work/www/api/client/features"
tuned=""
if [ "${VEXIL_NGINX_TUNED:-0}" = 1 ]; then
    tuned="    open_file_cache max=16 inactive=60s;
    keepalive_requests 100000000;"
fi
cat > "$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    etag on;
$tuned
    server {
        listen 127.0.0.1:$nport;
        root $work/www;
        location = $path { default_type application/json; }
    }
}
EOF
"$nginx_bin" -p "$work" -e "$work/error.log" -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 100); do
    curl -m 5 -fs -o /dev/null "$nurl" && break
    sleep 0.1
done

etag() { curl -m 5 -fsI -H "$spec" "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}'; }
vetag="$(etag "$vurl")"
netag="$(etag "$nurl")"
# Both answer the same bytes, and each answers 304 to its own ETag.
curl -m 5 -fs -H "$spec" "$nurl" | cmp -s - "$work/www/api/client/features" \
    || { echo "nginx serves other bytes than vexil" >&2; exit 1; }
for pair in "$vurl $vetag" "$nurl $netag"; do
    read -r url tag <<< "$pair"
    code="$(curl -m 5 -s -o /dev/null -w '%{http_code}' -H "$spec" -H "If-None-Match: $tag" "$url")"
    [ "$code" = 304 ] || { echo "$url: $code to If-None-Match: $tag, not 304" >&2; exit 1; }
done

# One wrk run; prints "requests/s bytes-per-response". Any answer that is not 2xx or 3xx fails.
wrk_run() { # url [if-none-match]
    local args=(-t1 "-c$conns" "-d${seconds}s" --latency -H "$spec") out
    [ -n "${2:-}" ] && args+=(-H "If-None-Match: $2")
    out="$(wrk "${args[@]}" "$1")"
    if grep -q 'Non-2xx or 3xx\|Socket errors' <<< "$out"; then
        echo "wrk saw errors on $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    awk '
        / requests in .* read$/ {
            n = $1; v = $(NF - 1); unit = v; sub(/[0-9.]+/, "", unit); sub(/[A-Za-z]+$/, "", v)
            m = unit == "KB" ? 1024 : unit == "MB" ? 1048576 : unit == "GB" ? 1073741824 : 1
            per = v * m / n
        }
        /^Requests\/sec/ { rps = $2 }
        END { printf "%s %.0f\n", rps, per }' <<< "$out"
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "Unleash body from $source_dir: $(wc -c < "$work/www/api/client/features") bytes ($spec; without the header: $(curl -m 5 -fs "$vurl" | wc -c) bytes); ETags: vexil $vetag, nginx $netag"
echo "nginx $("$nginx_bin" -v 2>&1 | sed 's/.*: //')$([ -n "$tuned" ] && echo ' (tuned)'); wrk -t1 -c$conns -d${seconds}s; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-12s %-6s %14s %10s %14s %10s %8s\n' request round "vexil req/s" "bytes/resp" "nginx req/s" "bytes/resp" ratio
for kind in body 304; do
    ratios=() vs=() ns=()
    for round in $(seq "$rounds"); do
        # (Assignments, so that a failed run stops the script.)
        if [ "$kind" = body ]; then
            vres="$(wrk_run "$vurl")"
            nres="$(wrk_run "$nurl")"
        else
            vres="$(wrk_run "$vurl" "$vetag")"
            nres="$(wrk_run "$nurl" "$netag")"
        fi
        read -r v vb <<< "$vres"
        read -r n nb <<< "$nres"
        r="$(awk -v v="$v" -v n="$n" 'BEGIN {printf "%.3f", v / n}')"
        ratios+=("$r") vs+=("$v") ns+=("$n")
        printf '%-12s %-6s %14s %10s %14s %10s %8s\n' "$kind" "$round" "$v" "$vb" "$n" "$nb" "$r"
    done
    printf '%-12s %-6s %14s %10s %14s %10s %8s\n' "$kind" median "$(printf '%s\n' "${vs[@]}" | median)" "" \
        "$(printf '%s\n' "${ns[@]}" | median)" "" "$(printf '%s\n' "${ratios[@]}" | median)"
done
echo "(target: vexil/nginx >= 0.9 for both; load after: $(cut -d' ' -f1-3 /proc/loadavg))"
