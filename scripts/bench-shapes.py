#!/usr/bin/env python3
"""The same events in the shapes other producers write, for speed measured beyond `gen`'s output.

Usage: scripts/bench-shapes.py EVENTS.jsonl OUTDIR

Writes OUTDIR/{absent,extra,shuffled,many}.jsonl from a `paystream gen` file, event for event:
  absent    optional fields left out (`status` of an approved authorization, card_country,
            ip_country, mcc, device_id, customer_id) — the events read the same
  extra     two unknown members (a string and a nested object) appended
  shuffled  members in a random order per line (seeded)
  many      30 unknown members per line (strings, numbers, booleans, a nested array)
Every shape gives the same query results as the original (unknown members are ignored, an
absent optional field reads as NULL, an absent status of an authorization as approved) —
except `absent`, which drops the optional columns' values: run it only with queries that do not
read them (settlement, velocity, the interval join).
"""
import json
import random
import sys
from pathlib import Path

OPTIONAL = ["card_country", "ip_country", "mcc", "device_id", "customer_id"]


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    files = {s: open(out / f"{s}.jsonl", "w") for s in ["absent", "extra", "shuffled", "many"]}
    with open(src) as f:
        for n, line in enumerate(f):
            e = json.loads(line)
            a = {k: v for k, v in e.items() if k not in OPTIONAL}
            if a.get("event_type") == "authorization" and a.get("status") == "approved":
                del a["status"]
            files["absent"].write(json.dumps(a, separators=(",", ":")) + "\n")
            x = dict(e)
            x["producer"] = "checkout-v2"
            x["context"] = {"session": f"s{n % 9973}", "retries": n % 3}
            files["extra"].write(json.dumps(x, separators=(",", ":")) + "\n")
            items = list(e.items())
            rng.shuffle(items)
            files["shuffled"].write(json.dumps(dict(items), separators=(",", ":")) + "\n")
            m = dict(e)
            for i in range(30):
                kind = i % 4
                m[f"attr_{i:02d}"] = (
                    f"value-{n % 1000}-{i}" if kind == 0
                    else n * 31 + i if kind == 1
                    else (i % 2 == 0) if kind == 2
                    else [i, f"t{i}", None]
                )
            files["many"].write(json.dumps(m, separators=(",", ":")) + "\n")
    for f in files.values():
        f.close()


if __name__ == "__main__":
    main()
