#!/usr/bin/env python3
"""A cache-invalidation receiver of Vexil's change notifications (docs/notifications.md):
verify the signature, refuse replays, drop the cached keys the change names."""
import hashlib, hmac, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["VEXIL_NOTIFY_SECRET"].encode()
cache = {}  # "namespace/flag" -> a cached value
seen = set()  # delivery ids already handled

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signed, self.headers.get("X-Vexil-Signature-256", "")):
            return self.answer(401)
        change = json.loads(body)  # its delivery id and timestamp are signed with it
        if abs(time.time() - change["timestamp"]) > 300:
            return self.answer(409)  # a replay of an old delivery
        if change["delivery"] in seen:
            return self.answer(204)  # a retry whose first answer was lost: done already
        seen.add(change["delivery"])
        for ns in change["namespaces"]:
            for flag in [f["flag"] for f in ns["added"] + ns["changed"]] + ns["removed"]:
                cache.pop(f'{ns["namespace"]}/{flag}', None)
                print("dropped", f'{ns["namespace"]}/{flag}', flush=True)
        self.answer(204)

    def answer(self, code):
        print("answered", code, flush=True)
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000), Receiver)
print("listening", server.server_port, flush=True)
server.serve_forever()
