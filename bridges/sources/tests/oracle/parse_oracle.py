#!/usr/bin/env python3
"""Differential oracle for kube-insight's exposition parser.

Parses each file named on the command line with the reference parser
`prometheus_client.parser.text_string_to_metric_families` (PyPI
`prometheus_client`) and prints one JSON object per file, in order, one per
line:

  {"ok": true, "samples": [...], "families": [[name, type], ...]}
  {"ok": false, "error": "..."}

Each sample is {"name", "labels": [[k, v], ...] sorted, "value_bits": 16 hex
digits of the IEEE-754 double, "value_repr", "timestamp_ms": int or null}.
prometheus_client gives timestamps in seconds (ms / 1000 as a float); they
are turned back into integer ms with round(), exact for |ms| < 2^50.

The parser aborts a whole document on its first bad line, so a rejected
document prints only the error. Exit status: 0 when every file was handled
(rejections included), 3 when prometheus_client cannot be imported.
"""

import json
import math
import struct
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"cannot import prometheus_client: {e}", file=sys.stderr)
    sys.exit(3)


def value_bits(v):
    return struct.pack(">d", float(v)).hex()


def to_ms(ts):
    if ts is None:
        return None
    # Sample.timestamp is a float of seconds (or a Timestamp in OpenMetrics).
    ms = float(ts) * 1000.0
    if math.isnan(ms) or math.isinf(ms):
        return repr(ms)
    return int(round(ms))


def parse_one(path):
    with open(path, "r", encoding="utf-8", newline="") as f:
        text = f.read()
    try:
        samples = []
        families = []
        for fam in text_string_to_metric_families(text):
            families.append([fam.name, fam.type])
            for s in fam.samples:
                samples.append(
                    {
                        "name": s.name,
                        "labels": sorted([k, v] for k, v in s.labels.items()),
                        "value_bits": value_bits(s.value),
                        "value_repr": repr(s.value),
                        "timestamp_ms": to_ms(s.timestamp),
                    }
                )
        return {"ok": True, "samples": samples, "families": families}
    except Exception as e:  # the parser raises ValueError and friends
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def main():
    for path in sys.argv[1:]:
        print(json.dumps(parse_one(path), sort_keys=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
