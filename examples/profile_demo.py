"""Profile the built-in demo DiT into a policy file, then explain it.

    python examples/profile_demo.py [--out policy.json]

On a CPU the kernels run their reference numerics: errors are real, times are FLOP estimates
(the report marks them "est."). On a GPU the same call measures real times.
"""
import argparse

import smartcompile
from smartcompile.demo.dit import factory


def main(out: str = "policy.json", progress: bool = True) -> smartcompile.Policy:
    model, args = factory()[:2]
    policy = smartcompile.profile(model, [(args, {})], budget=0.995, out=out, progress=progress)
    print(smartcompile.explain(model, *args, policy=policy))
    return policy


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="policy.json")
    main(ap.parse_args().out)
