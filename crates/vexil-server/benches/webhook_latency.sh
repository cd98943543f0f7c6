#!/usr/bin/env bash
# Webhook received -> new value served (issue 14): a release `vexil serve` on a remote that it
# fetches once an hour (so only the webhook brings a change), PUSHES times: commit a new value
# of a flag and push it to the remote (not timed), then time from sending a signed GitHub push
# hook to /hooks/github until OFREP serves the new value (polled over one keep-alive connection
# about every millisecond). Then one burst: 50 hooks at once for one push, with the reads of the
# source it cost (a hook that finds its commit served already is answered 200 and reads nothing). Prints p50, p90, p99 and max. Everything on 127.0.0.1.
#
# usage: crates/vexil-server/benches/webhook_latency.sh [PUSHES] [TRANSPORT]
#   (defaults: 50 pushes, transport `git`: the remote is served by `git daemon` on 127.0.0.1, a
#   network fetch; `https`: git http-backend behind nginx (fcgiwrap) with TLS from a CA made here,
#   given with --git-ca-file, and basic auth; `file`: a file:// URL)
#   environment: VEXIL_BIN: a vexil binary to use instead of building one
#   needs git (with git daemon) and python3 (standard library only); https: nginx, fcgiwrap,
#   openssl (installed when missing, as root)
set -euo pipefail
cd "$(dirname "$0")/../../.."
. crates/vexil-server/benches/common.sh
pushes="${1:-50}"
transport="${2:-git}"
command -v git > /dev/null || install_missing git
command -v python3 > /dev/null || install_missing python3
vexil="$(vexil_binary)"
work="$(mktemp -d)"
server=""
daemon=""
fcgi=""
cleanup() {
    for pid in $server $daemon $fcgi; do
        kill "$pid" 2> /dev/null && wait "$pid" 2> /dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@vexil.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@vexil.invalid
git init -q --bare -b main "$work/origin.git"
touch "$work/origin.git/git-daemon-export-ok"
git init -q -b main "$work/clone"
mkdir -p "$work/clone/flags"
flag() { printf 'flags:\n  a:\n    type: string\n    variants: { v: "%s" }\n    default: v\n' "$1"; }
flag v0 > "$work/clone/flags/a.yaml"
git -C "$work/clone" add -A
git -C "$work/clone" commit -q -m v0
git -C "$work/clone" push -q "$work/origin.git" main

free_port() { echo $((20000 + RANDOM % 20000)); }
extra=()
case "$transport" in
    git)
        gport="$(free_port)"
        git daemon --reuseaddr --listen=127.0.0.1 --port="$gport" --base-path="$work" \
            --export-all "$work" 2> "$work/daemon.log" &
        daemon=$!
        url="git://127.0.0.1:$gport/origin.git"
        for _ in $(seq 100); do
            git ls-remote "$url" > /dev/null 2>&1 && break
            sleep 0.1
        done
        ;;
    https)
        [ -x /usr/sbin/nginx ] || install_missing nginx
        [ -x /usr/sbin/fcgiwrap ] || install_missing fcgiwrap
        command -v openssl > /dev/null || install_missing openssl
        etc="$work/etc"
        mkdir -p "$etc" "$work/nginx"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
            -keyout "$etc/ca.key" -out "$etc/ca.pem" 2> /dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
            -keyout "$etc/server.key" -out "$etc/server.csr" 2> /dev/null
        printf 'subjectAltName=IP:127.0.0.1\n' > "$etc/san"
        openssl x509 -req -in "$etc/server.csr" -CA "$etc/ca.pem" -CAkey "$etc/ca.key" \
            -CAcreateserial -days 2 -extfile "$etc/san" -out "$etc/server.pem" 2> /dev/null
        printf 'bench:{PLAIN}bench-pw\n' > "$etc/htpasswd"
        /usr/sbin/fcgiwrap -s "unix:$etc/fcgiwrap.sock" 2> "$work/fcgiwrap.log" &
        fcgi=$!
        gport="$(free_port)"
        cat > "$etc/nginx.conf" <<CONF
daemon off;
worker_processes 1;
user root root;
pid $work/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$gport ssl;
    ssl_certificate $etc/server.pem;
    ssl_certificate_key $etc/server.key;
    location / {
      auth_basic "flags";
      auth_basic_user_file $etc/htpasswd;
      fastcgi_pass unix:$etc/fcgiwrap.sock;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT $work;
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param GIT_CONFIG_NOSYSTEM 1;
      fastcgi_param REMOTE_USER \$remote_user;
      fastcgi_param PATH_INFO \$uri;
      fastcgi_param QUERY_STRING \$query_string;
      fastcgi_param REQUEST_METHOD \$request_method;
      fastcgi_param CONTENT_TYPE \$content_type;
      fastcgi_param CONTENT_LENGTH \$content_length;
    }
  }
}
CONF
        /usr/sbin/nginx -e stderr -p "$work/nginx" -c "$etc/nginx.conf" 2> "$work/nginx.log" &
        daemon=$!
        url="https://127.0.0.1:$gport/origin.git"
        export VEXIL_GIT_USERNAME=bench VEXIL_GIT_PASSWORD=bench-pw
        extra=(--git-ca-file "$etc/ca.pem")
        for _ in $(seq 100); do
            GIT_SSL_CAINFO="$etc/ca.pem" git ls-remote "https://bench:bench-pw@127.0.0.1:$gport/origin.git" > /dev/null 2>&1 && break
            sleep 0.1
        done
        ;;
    file) url="file://$work/origin.git" ;;
    *) echo "unknown transport $transport (git, https or file)" >&2; exit 2 ;;
esac

printf 'bench-secret\n' > "$work/secret"
hport="$(free_port)"
"$vexil" serve "$url" --flags-dir flags --fetch-interval 1h --cache-dir "$work/cache" \
    --webhook-secret-file "$work/secret" --grpc-addr 127.0.0.1:0 "${extra[@]}" \
    --http-addr "127.0.0.1:$hport" --log warn --drain-window 0s > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 200); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$hport/readyz', timeout=2)" 2> /dev/null && break
    sleep 0.1
done

echo "vexil serve $url (--fetch-interval 1h), $pushes pushes, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$hport" "$work/clone" "$work/origin.git" "$pushes" <<'PY'
import hashlib, hmac, http.client, json, re, subprocess, sys, threading, time

port, clone, origin, pushes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
secret = b"bench-secret"
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)

def served():
    conn.request("POST", "/ofrep/v1/evaluate/flags/a", body=b'{"context":{"targetingKey":"u"}}',
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return json.loads(r.read()).get("value")

def push(value):
    with open(f"{clone}/flags/a.yaml", "w") as f:
        f.write(f'flags:\n  a:\n    type: string\n    variants: {{ v: "{value}" }}\n    default: v\n')
    subprocess.run(["git", "-C", clone, "commit", "-qam", value], check=True)
    subprocess.run(["git", "-C", clone, "push", "-q", origin, "main"], check=True)
    return subprocess.run(["git", "-C", clone, "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()

def hook(after, delivery):
    body = json.dumps({"ref": "refs/heads/main", "after": after,
                       "repository": {"full_name": "bench/flags", "default_branch": "main"}}).encode()
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    c.request("POST", "/hooks/github", body=body, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": sig})
    r = c.getresponse()
    answer = r.read()
    c.close()
    # 202: the source is read; 200: the commit was read already (the rest of a burst).
    assert r.status in (200, 202), (r.status, answer)
    return r.status

def wait_for(value, deadline=30.0):
    start = time.perf_counter()
    while served() != value:
        if time.perf_counter() - start > deadline:
            sys.exit(f"{value} not served within {deadline} s")
        time.sleep(0.001)

def reads():
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return sum(int(n) for n in re.findall(r'^vexil_reloads_total\{result="[a-z_]+"\} (\d+)$', text, re.M))

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]

assert served() == "v0"
took, fetches = [], []
for i in range(1, pushes + 1):
    value = f"v{i}"
    after = push(value)
    before = reads()
    t0 = time.perf_counter()
    assert hook(after, f"bench-{i}") == 202
    wait_for(value)
    took.append((time.perf_counter() - t0) * 1000)
    fetches.append(reads() - before)
ms = lambda x: f"{x:.1f} ms"
print(f"webhook -> new value served, {len(took)} pushes: p50 {ms(pct(took, 50))}, "
      f"p90 {ms(pct(took, 90))}, p99 {ms(pct(took, 99))}, max {ms(max(took))}, "
      f"min {ms(min(took))}; reads per push: {min(fetches)}-{max(fetches)}")

# A burst: 50 hooks at once for one push.
value = f"v{pushes + 1}"
after = push(value)
before = reads()
t0 = time.perf_counter()
codes = []
threads = [threading.Thread(target=lambda i=i: codes.append(hook(after, f"burst-{i}")))
           for i in range(50)]
for t in threads: t.start()
for t in threads: t.join()
answered = (time.perf_counter() - t0) * 1000
wait_for(value)
served_after = (time.perf_counter() - t0) * 1000
time.sleep(1.0)
print(f"burst of 50 hooks: all answered in {ms(answered)} ({codes.count(202)} triggered, "
      f"{codes.count(200)} found the commit read already), new value served after "
      f"{ms(served_after)}, {reads() - before} reads of the source")
PY
