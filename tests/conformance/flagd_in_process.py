"""Evaluates corpora in process with the real Python flagd provider (resolver IN_PROCESS, which
syncs flag definitions from flagd.sync.v1.FlagSyncService and evaluates them with
openfeature-flagd-core) and prints the answers as JSON. Driven by tests/e2e/flagd.

usage: flagd_in_process.py corpus HOST:PORT
         reads one JSON command a line on stdin, {"corpus": PATH, "await_change": BOOL}, and
         prints one JSON line per command: a list of {value, variant, reason, error}, in corpus
         order (corpus as in openfeature_client.py). With await_change, it first waits (up to
         30 s) for a CONFIGURATION_CHANGED event of every namespace it syncs.
       flagd_in_process.py bench HOST:PORT FLAG ROUNDS
         times ROUNDS boolean evaluations of FLAG in process, and as many over the flagd
         evaluation API (ResolveBoolean, resolver RPC) on the same server; prints one JSON line.
"""

import json
import sys
import threading
import time

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent

DEFAULTS = {"boolean": False, "string": "", "integer": 0, "float": 0.0, "object": {}}


def provider(target, namespace, resolver):
    host, port = target.rsplit(":", 1)
    return FlagdProvider(
        host=host,
        port=int(port),
        resolver_type=resolver,
        cache=CacheType.DISABLED,
        selector=None if namespace == "default" else f"flagSetId={namespace}",
        deadline_ms=5000,
    )


def details(client, case):
    getter = {
        "boolean": client.get_boolean_details,
        "string": client.get_string_details,
        "integer": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }[case["type"]]
    ctx = EvaluationContext(targeting_key=case.get("key"), attributes=case.get("attributes") or {})
    return getter(case["flag"], DEFAULTS[case["type"]], ctx)


def run_corpus(target):
    clients = {}
    changed = {}
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("await_change"):
            for ns, event in changed.items():
                if not event.wait(30):
                    print(json.dumps({"error": f"no configuration change for {ns}"}), flush=True)
                    return
        with open(command["corpus"]) as f:
            corpus = json.load(f)
        for event in changed.values():
            event.clear()
        out = []
        for case in corpus:
            ns = case["namespace"]
            if ns not in clients:
                event = threading.Event()
                api.set_provider_and_wait(provider(target, ns, ResolverType.IN_PROCESS), domain=ns)
                client = api.get_client(domain=ns)
                client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, lambda _d, e=event: e.set())
                clients[ns] = client
                changed[ns] = event
            d = details(clients[ns], case)
            out.append(
                {
                    "value": d.value,
                    "variant": d.variant,
                    "reason": getattr(d.reason, "value", d.reason),
                    "error": getattr(d.error_code, "value", d.error_code),
                }
            )
        print(json.dumps(out), flush=True)
    api.shutdown()


def run_bench(target, flag, rounds):
    ctx = EvaluationContext(targeting_key="user-42", attributes={"country": "DE", "plan": "pro"})
    timings = {}
    for name, resolver in [("in_process", ResolverType.IN_PROCESS), ("rpc", ResolverType.RPC)]:
        api.set_provider_and_wait(provider(target, "default", resolver), domain=name)
        client = api.get_client(domain=name)
        for _ in range(min(rounds, 200)):  # warm-up
            client.get_boolean_value(flag, False, ctx)
        start = time.perf_counter()
        for _ in range(rounds):
            client.get_boolean_value(flag, False, ctx)
        timings[name] = (time.perf_counter() - start) / rounds
    api.shutdown()
    print(json.dumps({
        "client": "python",
        "in_process_us": timings["in_process"] * 1e6,
        "rpc_us": timings["rpc"] * 1e6,
        "ratio": timings["rpc"] / timings["in_process"],
    }), flush=True)


if __name__ == "__main__":
    mode, target = sys.argv[1:3]
    if mode == "bench":
        run_bench(target, sys.argv[3], int(sys.argv[4]))
    else:
        run_corpus(target)
