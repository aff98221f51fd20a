"""Fuzzing the rewrite: generated attention formulations and near-misses (tests/fuzz_cases.py),
eager vs compiled under the exact policy: outputs, gradients and input side effects equal.

A fresh block of seeds every run (SMARTCOMPILE_FUZZ_SEED fixes it; a failure names its seed, and
`python scripts/fuzz_attention.py --seed N --cases 1` replays it). `scripts/fuzz_attention.py`
runs thousands of cases locally."""
import os

import pytest

from fuzz_cases import check, make_case

CASES_PER_RUN = 320
BLOCKS = 8


def _base_seed() -> int:
    env = os.environ.get("SMARTCOMPILE_FUZZ_SEED")
    return int(env) if env else int.from_bytes(os.urandom(3), "little") * 1000


BASE = _base_seed()


@pytest.mark.parametrize("block", range(BLOCKS))
def test_fuzzed_attention_compiles_to_eager_semantics(block):
    per = CASES_PER_RUN // BLOCKS
    failures, rewritten = [], 0
    for seed in range(BASE + block * per, BASE + (block + 1) * per):
        result = check(make_case(seed))
        rewritten += result.rewritten > 0
        if not result.ok:
            failures.append(f"{result.case.name}: {result.detail}")
    assert not failures, f"{len(failures)} of {per} cases differ from eager:\n" + "\n\n".join(failures[:3])
    assert rewritten >= per // 4, f"only {rewritten} of {per} cases were rewritten: the fuzz is not exercising the pass"
