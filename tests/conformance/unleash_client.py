"""Evaluates cases with the real Unleash Python SDK (UnleashClient 6.9.1, yggdrasil engine) against
Vexil's Unleash client API mirror and writes the answers as JSON.

usage: unleash_client.py BASE_URL CASES.json OUT.json [TOKEN]

BASE_URL is the mirror's API root, e.g. http://127.0.0.1:4242/api (the SDK appends
/client/features). TOKEN, if given, is sent as the `Authorization` header.

CASES.json is a list of
    {"flag": NAME, "context": {"userId", "sessionId", "remoteAddress", "environment", "appName",
                               "currentTime", "properties": {K: V}}, "variant": true|false}
OUT.json gets, in the same order,
    {"enabled": bool, "variant": {"name", "enabled", "payload": {"type", "value"} | null} | null}
("variant" is null unless the case asked for it).

Context notes (these are the SDK's, not ours): the client adds `appName` (APP_NAME below) and
`environment` ("default") unless the case sets them, and `currentTime` (now, ISO 8601) unless the
case sets it; every value is passed through str(). Keys whose value is null are dropped here so
that they do not become the string "None".

The script fails (exit 1) unless the SDK really fetched /client/features over HTTP with a 200,
the engine loaded exactly the features of that body, and the engine compiled them without
warnings (set VEXIL_UNLEASH_ALLOW_WARNINGS=1 to only print the warnings).
"""

import ctypes
import json
import logging
import os
import shutil
import sys
import tempfile

from UnleashClient import UnleashClient
from UnleashClient.utils import InstanceAllowType
from yggdrasil_engine.engine import UnleashEngine

APP_NAME = "vexil-conformance"


def fail(msg):
    print(f"unleash_client.py: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def clean_context(ctx):
    ctx = {k: v for k, v in (ctx or {}).items() if v is not None}
    if isinstance(ctx.get("properties"), dict):
        ctx["properties"] = {k: v for k, v in ctx["properties"].items() if v is not None}
    return ctx


def engine_verdict(state_json):
    """Loads the body into a throwaway engine through the raw FFI call and returns its
    (status_code, error_message): the Python wrapper's take_state() drops both, and the engine
    reports compile warnings and rejected JSON only there."""
    probe = UnleashEngine()
    ptr = probe.lib.take_state(probe.state, state_json.encode("utf-8"))
    try:
        response = json.loads(ctypes.cast(ptr, ctypes.c_char_p).value.decode("utf-8"))
    finally:
        probe.lib.free_response(ptr)
    return response.get("status_code"), response.get("error_message")


def main(argv):
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    base_url, cases_path, out_path = argv[1], argv[2], argv[3]
    token = argv[4] if len(argv) == 5 else None
    allow_warnings = os.environ.get("VEXIL_UNLEASH_ALLOW_WARNINGS") == "1"

    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    if not isinstance(cases, list):
        fail(f"{cases_path} is not a JSON array")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    cache_dir = tempfile.mkdtemp(prefix="vexil-unleash-cache-")
    client = None
    try:
        client = UnleashClient(
            url=base_url,
            app_name=APP_NAME,
            instance_id="vexil-conformance",
            refresh_interval=3600,  # one fetch, at initialize_client(); no re-poll during the run
            disable_metrics=True,
            disable_registration=True,
            custom_headers={"Authorization": token} if token else None,
            cache_directory=cache_dir,
            request_retries=0,
            request_timeout=30,
            verbose_log_level=logging.DEBUG,  # no warning per unknown flag
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        )

        # Record what the SDK's own fetch returned and what the engine said about it. These wrap
        # the pinned SDK's internals on this one instance; the calls themselves are unchanged.
        fetches = []
        loads = []
        transport, engine = client._transport, client._engine
        real_fetch, real_take_state = transport.fetch_features, engine.take_state

        def fetch_features(*args, **kwargs):
            result = real_fetch(*args, **kwargs)
            fetches.append(result)
            return result

        def take_state(state_json):
            loads.append(state_json)
            return real_take_state(state_json)

        transport.fetch_features = fetch_features
        engine.take_state = take_state

        client.initialize_client()

        if not fetches:
            fail("the SDK made no /client/features request")
        first = fetches[0]
        if first.raw_state is None:
            fail(
                f"GET {base_url.rstrip('/')}/client/features failed or was empty "
                "(see the SDK log above)"
            )
        try:
            body = json.loads(first.raw_state)
            served = [f["name"] for f in body["features"]]
        except (ValueError, KeyError, TypeError) as e:
            fail(f"/client/features body is not a features document: {e}")
        if not loads or loads[-1] != first.raw_state:
            fail("the fetched body never reached the engine")
        status, message = engine_verdict(first.raw_state)
        if status != "Ok":
            print(f"unleash_client.py: engine said {status}: {message}", file=sys.stderr)
            if not (allow_warnings and "warnings were reported" in (message or "")):
                fail("the engine rejected the body or could not compile some features")

        known = sorted(t.name for t in engine.list_known_toggles())
        if not known:
            fail("the engine knows no features after the fetch (body rejected or empty)")
        if known != sorted(served):
            fail(
                f"the engine loaded {len(known)} features but the server sent {len(served)}: "
                f"missing {sorted(set(served) - set(known))[:10]}"
            )
        print(
            f"unleash_client.py: fetched {len(served)} features (etag {first.etag!r}), "
            f"evaluating {len(cases)} cases",
            file=sys.stderr,
        )

        out = []
        for case in cases:
            flag = case["flag"]
            ctx = clean_context(case.get("context"))
            enabled = client.is_enabled(flag, ctx)
            variant = None
            if case.get("variant"):
                v = client.get_variant(flag, ctx)
                variant = {
                    "name": v["name"],
                    "enabled": v["enabled"],
                    "payload": v.get("payload"),
                }
            out.append({"enabled": enabled, "variant": variant})

        with open(out_path, "w", encoding="utf-8") as f:
            json.dump(out, f)
        return 0
    finally:
        if client is not None:
            client.destroy()
        shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
