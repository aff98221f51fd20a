"""Which accuracy bounds sit on their distribution's tail? Reads the JSON lines that tests/helpers.assert_close_to
writes when SMARTCOMPILE_BOUNDS_LOG names a file, and lists the checks by the largest share of a bound any random
draw used: (1 - cos) / (1 - min_cosine) and rel_l1 / max_rel_l1. A share near 1 over a few runs is a test that
CI will fail by chance (session 12: the Sage fp16 bound was drawn past twice in one CI run).

    SMARTCOMPILE_BOUNDS_LOG=/tmp/bounds.jsonl python -m pytest -q tests/   # a few times
    python tests/bounds_margins.py /tmp/bounds.jsonl --top 25
"""
from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict


def shares(row: dict) -> tuple[float, float]:
    """(share of the cosine bound, share of the relative-L1 bound) this draw used; > 1 failed, and a non-finite
    output (NaN cosine) counts as infinitely far (max() would drop a NaN)."""
    cos_room = 1.0 - row["min_cosine"]
    cos_share = (1.0 - row["cosine"]) / cos_room if cos_room > 0 else 0.0
    rel_share = row["rel_l1"] / row["max_rel_l1"] if row["max_rel_l1"] > 0 else 0.0
    return tuple(x if math.isfinite(x) else math.inf for x in (cos_share, rel_share))


def read_rows(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                shares(row)
            except (ValueError, KeyError, TypeError) as exc:  # a line cut by a killed run: skipped, said
                print(f"{path}:{n}: skipped ({type(exc).__name__})")
                continue
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--by-case", action="store_true", help="keep parametrize ids apart (default: per test function)")
    args = ap.parse_args()
    worst = defaultdict(lambda: [0.0, 0.0, 0])
    for row in read_rows(args.log):
        # a test may check several bounds (fp8 and fp16...): each bound pair is its own row
        name = row["test"] if args.by_case else re.sub(r"\[.*\]", "", row["test"])
        key = f"{name}  (cos>={row['min_cosine']}, relL1<={row['max_rel_l1']})"
        c, r = shares(row)
        w = worst[key]
        w[0], w[1], w[2] = max(w[0], c), max(w[1], r), w[2] + 1
    print(f"{'worst cos share':>15} {'worst relL1 share':>17} {'draws':>6}  test")
    for key, (c, r, n) in sorted(worst.items(), key=lambda kv: -max(kv[1][0], kv[1][1]))[:args.top]:
        print(f"{c:15.2f} {r:17.2f} {n:6d}  {key}")


if __name__ == "__main__":
    main()
