"""The launch cache's key (kernels/launch_cache.py) against Triton's own specialization: two launches with the
same key must be ones Triton specializes the same way, or a hit would run a kernel compiled for other
arguments. Triton's binder for sm_90a builds on a machine without a GPU; the GPU side (hits, same bits as the
usual path) is in test_gpu_launch_cache.py."""
import random

import pytest
import torch
import triton
import triton.language as tl

from smartcompile.kernels import launch_cache


@triton.jit
def _probe(x_ptr, y_ptr, n, stride, scale, flag, maybe, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs * stride, tl.load(x_ptr + offs * stride, mask=offs < n) * scale, mask=offs < n)


SETTINGS = (False, None)  # launch_cache._settings's (debug, instrumentation mode)


def _binder():
    jit = pytest.importorskip("triton.runtime.jit")
    if not hasattr(jit, "create_function_from_signature") or not hasattr(_probe, "params"):
        pytest.skip("this Triton has no binder of the form the cache mirrors")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", 90, 32))
    return jit.create_function_from_signature(_probe.signature, _probe.params, backend)


def _random_launch(rng: random.Random):
    base = torch.zeros(64, dtype=rng.choice([torch.float32, torch.bfloat16, torch.int8]))
    x, y = base[rng.choice([0, 1, 8, 16]):], base[rng.choice([0, 3, 16]):]  # views: some addresses unaligned
    # equal values of other types (True == 1 == 1.0, 16 == 16.0) in one position: Triton compiles them apart
    n = rng.choice([1, 2, 15, 16, 17, 32, 4096, (1 << 31) - 16, 1 << 31, 1 << 40, -(1 << 40), 1 << 63, -16, -3,
                    True, 1.0, 16.0])
    stride = rng.choice([1, 16, 48, 7])
    args = (x, y, n, stride, rng.choice([0.5, 2.0, 2, 1, True]), rng.choice([True, False, 1, 0]),
            rng.choice([None, 3, 32]), rng.choice([16, 32]))
    meta = dict(EVEN=rng.choice([True, False, 1, 0]))
    if rng.random() < 0.5:
        meta["num_warps"] = rng.choice([4, 8])
    return args, meta


def test_equal_keys_mean_equal_triton_specializations():
    binder = _binder()
    state = launch_cache._KernelLaunches(_probe)
    assert state.reason is None
    rng = random.Random(0)
    seen = {}
    for _ in range(3000):
        args, meta = _random_launch(rng)
        key = state.key(0, args, meta, SETTINGS)
        _, specialization, options = binder(*args, **meta)
        triton_view = (repr(specialization), repr(options))
        assert seen.setdefault(key, triton_view) == triton_view, (args, meta)
    assert len(seen) > 50  # the inputs really vary


def test_keys_tell_dtypes_alignment_values_and_devices_apart():
    state = launch_cache._KernelLaunches(_probe)
    x = torch.zeros(64)
    base = state.key(0, (x, x, 100, 1, 1.0, True, None, 16), {}, SETTINGS)
    assert base == state.key(0, (torch.ones(64), x, 100, 1, 1.0, True, None, 16), {}, SETTINGS)  # aligned too
    for other in [state.key(0, (x[1:], x, 100, 1, 1.0, True, None, 16), {}, SETTINGS),  # unaligned
                  state.key(0, (x.half(), x, 100, 1, 1.0, True, None, 16), {}, SETTINGS),
                  state.key(0, (x, x, 101, 1, 1.0, True, None, 16), {}, SETTINGS),
                  state.key(0, (x, x, 100, 1, 1.0, True, None, 32), {}, SETTINGS),
                  state.key(0, (x, x, 100, 1, 1.0, True, None, 16), {"EVEN": True}, SETTINGS),
                  state.key(0, (x, x, 100, True, 1.0, True, None, 16), {}, SETTINGS),  # True == 1, another type
                  state.key(0, (x, x, 100, 1, 1, True, None, 16), {}, SETTINGS),  # 1 == 1.0, another type
                  state.key(0, (x, x, 100, 1, 1.0, True, None, 16), {}, (True, None)),  # TRITON_DEBUG
                  state.key(1, (x, x, 100, 1, 1.0, True, None, 16), {}, SETTINGS)]:
        assert other != base


def test_launch_without_cuda_takes_the_usual_path(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CPU-only check")
    calls = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **meta: calls.append((grid, args, meta))

    monkeypatch.setattr(launch_cache, "_RUNTIME", [])
    launch_cache.launch(Kernel(), (3,), (1, 2), {"B": 4})
    assert calls == [((3,), (1, 2), {"B": 4})]
    assert launch_cache.cached_keys(Kernel()) == 0


def test_interpreted_and_heuristics_kernels_take_the_usual_path():
    from triton.runtime.interpreter import InterpretedFunction

    interpreted = InterpretedFunction(_probe.fn)
    assert launch_cache._KernelLaunches(interpreted).reason is not None
    heuristic = triton.heuristics({"EVEN": lambda args: True})(_probe)
    assert launch_cache._KernelLaunches(heuristic).reason is not None


def test_a_tensor_subclass_is_keyed_by_its_type_never_by_identity():
    """A key never holds an argument tensor (the cache would keep it alive) and equal-looking tensors of another
    class do not share a key with plain ones."""
    state = launch_cache._KernelLaunches(_probe)

    def key(x):
        return state.key(0, (x, x, 100, 1, 1.0, True, None, 16), {}, SETTINGS)

    a, b = torch.nn.Parameter(torch.zeros(64)), torch.nn.Parameter(torch.ones(64))
    assert key(a) == key(b) and key(a) != key(torch.zeros(64))

    def parts(k):
        for p in k:
            yield from parts(p) if isinstance(p, tuple) else (p,)

    assert not any(isinstance(p, torch.Tensor) for p in parts(key(a)))
    assert not any(isinstance(p, torch.Tensor) for p in parts(key(torch.zeros(64))))
