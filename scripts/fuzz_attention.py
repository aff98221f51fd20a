"""Fuzz the smartattn rewrite locally: N generated attention formulations and near-misses, eager
vs compiled under the exact policy (outputs, gradients, input side effects).

    python scripts/fuzz_attention.py --cases 5000 [--seed 0] [--inductor]

Prints each failure with its seed and a summary; exit status 1 if any case failed."""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_cases import check, make_case  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0, help="first seed; case i uses seed + i")
    ap.add_argument("--inductor", action="store_true", help="run Inductor after the rewrite (slower)")
    args = ap.parse_args()
    from tqdm import tqdm

    start, failed, rewritten, families = time.time(), [], 0, collections.Counter()
    for seed in tqdm(range(args.seed, args.seed + args.cases), desc="fuzz", unit="case"):
        case = make_case(seed)
        result = check(case, inductor=args.inductor)
        families[case.name.split("-")[1]] += 1
        rewritten += result.rewritten > 0
        if not result.ok:
            failed.append(result)
            tqdm.write(f"FAIL seed {seed}: {case.name}\n{result.detail}\n")
    print(f"{args.cases} cases ({dict(families)}), {rewritten} rewritten, {len(failed)} failed, "
          f"{time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
