"""Evaluates a corpus with a real OpenFeature Python provider and prints the answers as JSON.

usage: openfeature_client.py flagd HOST:PORT CORPUS.json
       openfeature_client.py ofrep BASE_URL CORPUS.json
       openfeature_client.py cache HOST:PORT FLAG    (interactive: see tests/e2e/openfeature.rs)

The corpus is a list of {namespace, flag, type, key, attributes}; the output is a list of
{value, variant, reason, error} in the same order.
"""

import json
import sys
import threading

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent

DEFAULTS = {"boolean": False, "string": "", "integer": 0, "float": 0.0, "object": {}}


def flagd_provider(target, namespace, cache):
    host, port = target.rsplit(":", 1)
    return FlagdProvider(
        host=host,
        port=int(port),
        resolver_type=ResolverType.RPC,
        cache=cache,
        selector=None if namespace == "default" else f"flagSetId={namespace}",
        deadline_ms=5000,
    )


def ofrep_provider(base, namespace):
    url = base if namespace == "default" else f"{base}/ns/{namespace}"
    return OFREPProvider(url)


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


def reason_of(d):
    return getattr(d.reason, "value", d.reason)


def run_corpus(mode, target, corpus_path):
    with open(corpus_path) as f:
        corpus = json.load(f)
    clients = {}
    out = []
    for case in corpus:
        ns = case["namespace"]
        if ns not in clients:
            if mode == "flagd":
                provider = flagd_provider(target, ns, CacheType.DISABLED)
            else:
                provider = ofrep_provider(target, ns)
            api.set_provider_and_wait(provider, domain=ns)
            clients[ns] = api.get_client(domain=ns)
        d = details(clients[ns], case)
        out.append(
            {
                "value": d.value,
                "variant": d.variant,
                "reason": reason_of(d),
                "error": getattr(d.error_code, "value", d.error_code),
            }
        )
    print(json.dumps(out))


def run_cache(target, flag):
    """STATIC answers are cached (reason CACHED) until a configuration_change names the flag."""
    events = []
    changed = threading.Event()

    def on_event(kind):
        def handler(details):
            events.append({"event": kind, "flags": list(details.flags_changed or [])})
            if kind == "configuration_changed" and flag in (details.flags_changed or []):
                changed.set()

        return handler

    api.add_handler(ProviderEvent.PROVIDER_READY, on_event("ready"))
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_event("configuration_changed"))
    api.set_provider_and_wait(flagd_provider(target, "default", CacheType.LRU))
    client = api.get_client()
    case = {"flag": flag, "type": "string", "key": "someone"}
    first = details(client, case)
    second = details(client, case)
    print(json.dumps({"first": [first.value, reason_of(first)], "second": [second.value, reason_of(second)]}), flush=True)
    sys.stdin.readline()  # the test commits a change to the flag, then writes a line
    arrived = changed.wait(15)
    third = details(client, case)
    print(json.dumps({"changed_event": arrived, "third": [third.value, reason_of(third)], "events": events}), flush=True)
    api.shutdown()


if __name__ == "__main__":
    mode, target, arg = sys.argv[1:4]
    if mode == "cache":
        run_cache(target, arg)
    else:
        run_corpus(mode, target, arg)
