#!/usr/bin/env python3
"""Independent bucket vectors for the rollout and split spec tables (09-rollout.yaml, 10-split.yaml).

Vexil's bucketing contract (docs/format.md "Bucketing", shared/reference/bucketing.md):

    bucket = crc32(utf8(salt + value)) % 100000     # zlib's CRC-32 (IEEE), no separator
    rollout P  includes the entity iff  bucket < round(P * 1000)
    split w1..wn gives the first variant i with  bucket < floor(100000 * (w1 + .. + wi) / 100)

salt is the flag key unless the rule sets `salt`; value is the targeting key unless the rule sets
`bucket_by`. This script uses only Python's standard library (zlib.crc32), so it checks the spec
tables independently of the Rust implementation.

Usage:
    python3 tests/spec/gen_bucket_vectors.py                 # print every vector used by the tables
    python3 tests/spec/gen_bucket_vectors.py SALT VALUE...   # print the bucket of ad-hoc pairs
    python3 tests/spec/gen_bucket_vectors.py --find SALT PREFIX BUCKET...
                                                             # search PREFIX0, PREFIX1, ... for values
                                                             # landing exactly on the given buckets

The default mode prints one line per (salt, value, outcome) used by a spec case and exits with status 1
if an outcome computed here differs from the one written into the tables (the EXPECTED column below,
copied by hand from the YAML files), so reviewers can re-run it after editing a table.
"""

import sys
import zlib
from math import floor


def bucket(salt: str, value: str) -> int:
    return zlib.crc32((salt + value).encode("utf-8")) % 100000


def rollout_in(b: int, p: float) -> bool:
    return b < round(p * 1000)


def split_pick(b: int, weights):
    """weights: list of (variant, weight) in declared order; returns the chosen variant."""
    total = 0
    for name, w in weights:
        total += w
        if b < floor(100000 * total / 100):
            return name
    return None


# (salt, value, check, expected, where)
#   check: ("rollout", P)  -> expected "in" / "out"
#          ("split", [(variant, weight), ...]) -> expected variant name
EDGE = "edge-salt"
S_3WAY = [("a", 20), ("b", 30), ("c", 50)]
S_Z1 = [("a", 0), ("b", 50), ("c", 50)]
S_Z2 = [("a", 50), ("b", 0), ("c", 50)]
S_Z3 = [("a", 50), ("b", 50), ("c", 0)]
S_5050 = [("a", 50), ("b", 50)]
S_BOOL = [("on", 50), ("off", 50)]
S_INT = [("ten", 25), ("twenty", 75)]
S_OBJ = [("never", 0), ("always", 100)]
S_THEME = [("classic", 50), ("dark", 50)]

VECTORS = [
    # bucketing.md vectors
    ("my_feature", "User;7", ("rollout", 25), "in", "09 my_feature"),
    ("my_feature", "User;1", ("rollout", 25), "out", "09 my_feature"),
    ("new-checkout", "user-42", ("rollout", 25), "out", "09 new-checkout"),
    ("new-checkout", "user-43", ("rollout", 25), "in", "09 new-checkout"),
    ("checkout-theme", "acct-9001", ("split", S_THEME), "classic", "10 checkout-theme"),
    ("ünïcode-flag", "ユーザー1", ("rollout", 25), "out", "09 unicode-salt"),
    # three-decimal thresholds
    ("my_feature", "User;7", ("rollout", 12.468), "out", "09 precise-out"),
    ("my_feature", "User;7", ("rollout", 12.469), "in", "09 precise-in"),
    ("my_feature", "User;1", ("rollout", 12.469), "out", "09 precise-in"),
    ("ünïcode-flag", "ユーザー1", ("rollout", 75.232), "out", "09 unicode-edge-out"),
    ("ünïcode-flag", "ユーザー1", ("rollout", 75.233), "in", "09 unicode-edge-in"),
    # edge-salt boundaries, rollout
    (EDGE, "user-69568", ("rollout", 0), "out", "09 zero"),
    (EDGE, "user-19311", ("rollout", 0), "out", "09 zero"),
    (EDGE, "user-69568", ("rollout", 0.001), "in", "09 tiny"),
    (EDGE, "user-19311", ("rollout", 0.001), "out", "09 tiny"),
    (EDGE, "user-51847", ("rollout", 99.999), "out", "09 almost-all"),
    (EDGE, "user-6245", ("rollout", 99.999), "in", "09 almost-all"),
    (EDGE, "user-51847", ("rollout", 100), "in", "09 full"),
    (EDGE, "user-69568", ("rollout", 100), "in", "09 full"),
    (EDGE, "user-127624", ("rollout", 25), "in", "09 edge-25"),
    (EDGE, "user-198804", ("rollout", 25), "out", "09 edge-25 / targeted / string-rollout"),
    (EDGE, "user-19311", ("rollout", 25), "in", "09 edge-25 / targeted"),
    (EDGE, "user-127624", ("rollout", 25), "in", "09 string-rollout"),
    ("salt-demo", "user-21210", ("rollout", 25), "out", "09 salt-demo"),
    (EDGE, "user-21210", ("rollout", 25), "in", "09 salt-demo-salted"),
    ("salt-demo", "user-36838", ("rollout", 25), "in", "09 salt-demo"),
    (EDGE, "user-36838", ("rollout", 25), "out", "09 salt-demo-salted"),
    (EDGE, "acct-2", ("rollout", 50), "in", "09 by-account (bucket_by account_id)"),
    (EDGE, "acct-1", ("rollout", 50), "out", "09 by-account (bucket_by account_id)"),
    (EDGE, "user-36838", ("rollout", 50), "out", "09 by-account: the key alone would be out"),
    (EDGE, "user-105186", ("rollout", 50), "in", "09 by-account: the key alone would be in; rollout-serve-false"),
    (EDGE, "user-36838", ("rollout", 50), "out", "09 rollout-serve-false"),
    (EDGE, "user-21210", ("rollout", 20), "in", "09 fallthrough"),
    (EDGE, "user-80399", ("rollout", 20), "out", "09 fallthrough"),
    # splits
    ("checkout-theme", "acct-9000", ("split", S_THEME), "classic", "10 checkout-theme"),
    ("checkout-theme", "acct-9008", ("split", S_THEME), "dark", "10 checkout-theme"),
    ("checkout-theme", "acct-9002", ("split", S_THEME), "dark", "10 checkout-theme"),
    (EDGE, "user-69568", ("split", S_3WAY), "a", "10 three-way"),
    (EDGE, "user-21210", ("split", S_3WAY), "a", "10 three-way"),
    (EDGE, "user-80399", ("split", S_3WAY), "b", "10 three-way"),
    (EDGE, "user-105186", ("split", S_3WAY), "b", "10 three-way"),
    (EDGE, "user-36838", ("split", S_3WAY), "c", "10 three-way"),
    (EDGE, "user-51847", ("split", S_3WAY), "c", "10 three-way"),
    (EDGE, "user-69568", ("split", S_Z1), "b", "10 zero-first"),
    (EDGE, "user-105186", ("split", S_Z1), "b", "10 zero-first"),
    (EDGE, "user-36838", ("split", S_Z1), "c", "10 zero-first"),
    (EDGE, "user-105186", ("split", S_Z2), "a", "10 zero-middle"),
    (EDGE, "user-36838", ("split", S_Z2), "c", "10 zero-middle"),
    (EDGE, "user-6245", ("split", S_Z2), "c", "10 zero-middle"),
    (EDGE, "user-51847", ("split", S_Z3), "b", "10 zero-last"),
    (EDGE, "user-69568", ("split", S_Z3), "a", "10 zero-last"),
    (EDGE, "user-105186", ("split", S_BOOL), "on", "10 bool-split"),
    (EDGE, "user-36838", ("split", S_BOOL), "off", "10 bool-split"),
    (EDGE, "user-127624", ("split", S_INT), "ten", "10 int-split"),
    (EDGE, "user-198804", ("split", S_INT), "twenty", "10 int-split"),
    (EDGE, "user-69568", ("split", S_OBJ), "always", "10 object-split"),
    (EDGE, "user-51847", ("split", S_OBJ), "always", "10 object-split"),
    (EDGE, "user-105186", ("split", S_5050), "a", "10 by-session (bucket_by session)"),
    (EDGE, "user-36838", ("split", S_5050), "b", "10 by-session / targeted-split"),
    (EDGE, "user-69568", ("split", S_5050), "a", "10 targeted-split"),
]


def describe(check):
    kind, arg = check
    if kind == "rollout":
        return f"rollout {arg}% (threshold {round(arg * 1000)})"
    bounds, total = [], 0
    for name, w in arg:
        total += w
        bounds.append(f"{name}<{floor(100000 * total / 100)}")
    return "split " + " ".join(bounds)


def outcome(b, check):
    kind, arg = check
    if kind == "rollout":
        return "in" if rollout_in(b, arg) else "out"
    return split_pick(b, arg)


def main(argv):
    if len(argv) >= 2 and argv[0] == "--find":
        salt, prefix, targets = argv[1], argv[2], {int(t) for t in argv[3:]}
        found, i = {}, 0
        while targets - found.keys() and i < 20_000_000:
            v = f"{prefix}{i}"
            b = bucket(salt, v)
            if b in targets and b not in found:
                found[b] = v
                print(f"{salt!r} + {v!r} -> {b}")
            i += 1
        return 0
    if argv:
        salt, values = argv[0], argv[1:]
        for v in values:
            c = zlib.crc32((salt + v).encode("utf-8"))
            print(f"{salt!r} + {v!r}: crc32={c} bucket={c % 100000}")
        return 0
    bad = 0
    print(f"{'salt':<16} {'value':<13} {'crc32':>10} {'bucket':>6}  {'outcome':<8} check / used by")
    for salt, value, check, expected, where in VECTORS:
        c = zlib.crc32((salt + value).encode("utf-8"))
        b = c % 100000
        got = outcome(b, check)
        flag = "" if got == expected else f"   <-- MISMATCH, table says {expected}"
        bad += got != expected
        print(f"{salt:<16} {value:<13} {c:>10} {b:>6}  {got:<8} {describe(check)}; {where}{flag}")
    print(f"{len(VECTORS)} vectors, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
