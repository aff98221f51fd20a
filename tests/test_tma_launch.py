"""TMA descriptor arguments by their parts and the direct launcher with cached encodings (kernels/tma_launch.py).

On the CPU: TmaArg's key against Triton's own specialization of the descriptor it builds, the launcher's argument
expansion and encoding cache against a recording launcher, and `direct_launcher` against Triton 3.6's real
descriptor wrapper (where this Triton is 3.6; another Triton must give None: the launch cache then takes the usual
launcher). The GPU side (same bits as Triton's path, no encoding on a repeated launch) is in test_gpu_launch_cache.py.
"""
import itertools

import pytest
import torch

from smartcompile.kernels import tma_launch
from smartcompile.kernels.tma_launch import DirectLauncher, TmaArg, as_descriptors, direct_launcher


def _gluon_descriptor_parts():
    hopper = pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
    gl = pytest.importorskip("triton.experimental.gluon.language")
    if not hasattr(gl, "NVMMASharedLayout"):
        pytest.skip("this Triton's Gluon has no NVMMASharedLayout")
    return hopper.TensorDescriptor, gl


def test_equal_keys_mean_equal_triton_specializations():
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    descriptor_type, gl = _gluon_descriptor_parts()
    seen, keys = {}, set()
    storage = torch.zeros(1 << 16, dtype=torch.int8)
    for dtype, block, width, offset in itertools.product((torch.int8, torch.float8_e4m3fn), ((64, 64), (64, 128),
                                                         (128, 128), (8, 128)), (64, 128), (0, 16, 32)):
        t = storage[offset:offset + 256 * width].view(dtype).view(256, width)
        layout = gl.NVMMASharedLayout.get_default_for(list(block), gl.int8 if dtype == torch.int8 else gl.float8e4nv)
        arg = TmaArg(t, block, layout, descriptor_type)
        spec = native_specialize_impl(BaseBackend, arg.descriptor(), False, True, True)
        assert seen.setdefault(arg.key(), spec) == spec, (dtype, block, width, offset)
        keys.add(arg.key())
    assert len(keys) == 8  # dtype x block: the widths and offsets (all aligned) share a specialization


def test_a_misaligned_base_is_another_key_and_the_descriptor_refuses_it():
    descriptor_type, gl = _gluon_descriptor_parts()
    storage = torch.zeros(8192, dtype=torch.int8)
    layout = gl.NVMMASharedLayout.get_default_for([64, 64], gl.int8)
    aligned, misaligned = (TmaArg(storage[o:o + 64 * 64].view(64, 64), (64, 64), layout, descriptor_type)
                           for o in (0, 3))
    assert aligned.key() != misaligned.key()
    with pytest.raises(AssertionError, match="16-byte aligned"):
        misaligned.descriptor()


def test_as_descriptors_builds_only_tma_args():
    descriptor_type, gl = _gluon_descriptor_parts()
    t = torch.zeros(128, 64, dtype=torch.int8)
    arg = TmaArg(t, (64, 64), gl.NVMMASharedLayout.get_default_for([64, 64], gl.int8), descriptor_type)
    other = torch.ones(3)
    built = as_descriptors((other, arg, 7))
    assert built[0] is other and built[2] == 7
    d = built[1]
    assert isinstance(d, descriptor_type) and d.base is t and list(d.shape) == [128, 64] \
        and list(d.strides) == [64, 1] and list(d.block_shape) == [64, 64]


class _Desc:
    """A descriptor object with the fields Triton's encoder reads."""

    def __init__(self, base, padding="zero"):
        self.base, self.shape, self.strides, self.padding = base, list(base.shape), list(base.stride()), padding


def _fake_encode(calls):
    def encode(desc, meta):
        calls.append((desc.base.data_ptr(), tuple(desc.shape), meta))
        return [("map", desc.base.data_ptr(), tuple(desc.shape), tuple(desc.strides), meta), *desc.shape,
                *desc.strides]
    return encode


def _tma(t):
    return TmaArg(t, (8, 8), "layout", _Desc_from_parts)


def _Desc_from_parts(base, shape, strides, block_shape, layout):  # noqa: N802 (a descriptor type's constructor)
    d = _Desc(base)
    assert d.shape == shape and d.strides == strides and block_shape == [8, 8] and layout == "layout"
    return d


def test_the_direct_launcher_expands_descriptors_in_place_and_encodes_each_buffer_once():
    received, calls = [], []
    launcher = DirectLauncher(lambda *a: received.append(a), False, True, (0, 3), ("meta0", "meta3"),
                              _fake_encode(calls))
    a, b, c = torch.zeros(16, 8), torch.zeros(32, 8), torch.zeros(16, 8)
    values = (_tma(a), 5, "x", _tma(b), 2.5, None)
    launcher((4, 2, 1), 77, "fn", "packed", values)
    args = received[-1]
    assert args[:13] == (4, 2, 1, 77, "fn", False, True, None, None, "packed", None, None, None)
    assert args[13:] == (("map", a.data_ptr(), (16, 8), (8, 1), "meta0"), 16, 8, 8, 1, 5, "x",
                         ("map", b.data_ptr(), (32, 8), (8, 1), "meta3"), 32, 8, 8, 1, 2.5, None)
    assert len(calls) == 2 and launcher.encoded == 2
    launcher((4, 2, 1), 77, "fn", "packed", values)  # the same buffers: no new encoding, the same arguments
    assert received[-1] == args and len(calls) == 2
    # another buffer of the same shape, a view of another shape at the same address, another descriptor object
    launcher((1, 1, 1), 0, "fn", "packed", (_tma(c), 5, "x", _tma(b), 2.5, None))
    assert received[-1][13][1] == c.data_ptr() and len(calls) == 3
    launcher((1, 1, 1), 0, "fn", "packed", (_tma(a[:8]), 5, "x", _Desc(b), 2.5, None))
    assert received[-1][13][2] == (8, 8) and len(calls) == 5  # a[:8] shares a's address; _Desc is keyed apart
    launcher((1, 1, 1), 0, "fn", "packed", (_tma(a[:8]), 5, "x", _Desc(b), 2.5, None))
    assert len(calls) == 5


def test_the_encoding_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tma_launch, "_MAX_ENCODINGS", 4)
    calls = []
    launcher = DirectLauncher(lambda *a: None, False, False, (0,), ("m",), _fake_encode(calls))
    buffers = [torch.zeros(8 * (i + 1), 8) for i in range(10)]
    for t in buffers:
        launcher((1, 1, 1), 0, "fn", "p", (_tma(t),))
    assert len(launcher.encodings) <= 4 and len(calls) == 10
    launcher((1, 1, 1), 0, "fn", "p", (_tma(buffers[-1]),))
    assert len(calls) == 10  # the newest is still cached


class _Run:
    def __init__(self, launch, scratch=0):
        self.launch, self.global_scratch_size, self.profile_scratch_size = launch, scratch, 0
        self.launch_cooperative_grid, self.launch_pdl = False, False


class _Compiled:
    def __init__(self, run):
        self.run = run


def test_direct_launcher_matches_triton_36s_descriptor_wrapper(monkeypatch):
    """The same arguments reach the C launcher through Triton's wrapper (descriptors encoded per call) and through
    ours (cached): Triton 3.6's real wrap_handle_tensordesc, its encoder replaced by a recording one (no CUDA)."""
    driver = pytest.importorskip("triton.backends.nvidia.driver")
    if getattr(driver, "_BASE_ARGS_FORMAT_LEN", None) != 13:
        pytest.skip("not Triton 3.6's launcher (this Triton's is checked to give None below)")
    calls = []
    monkeypatch.setattr(driver, "make_tensordesc_arg", _fake_encode(calls))
    received = []
    signature = {0: "tensordesc<i8[8, 8]>", 1: "i32", 2: "*fp32", 3: "tensordesc<fp8e4nv[8, 8]>", 4: "constexpr"}
    inner = driver.wrap_handle_tensordesc(lambda *a: received.append(a), signature, ["m0", "m3"])
    direct = direct_launcher(_Compiled(_Run(inner)))
    assert direct is not None and direct.slots == ((0, "m0"), (3, "m3"))
    a, b, ptr = torch.zeros(16, 8), torch.zeros(24, 8), torch.zeros(4)
    head = (2, 3, 1, 99, "fn", False, False, None, None, "packed", None, None, None)
    inner(*head, _Desc(a), 7, ptr, _Desc(b), 128)
    direct((2, 3, 1), 99, "fn", "packed", (_tma(a), 7, ptr, _tma(b), 128))
    assert received[0] == received[1]
    assert direct_launcher(_Compiled(_Run(inner, scratch=64))) is None  # global scratch: the usual launcher
    untyped = driver.wrap_handle_tensordesc(lambda *a: None, signature, None)
    assert direct_launcher(_Compiled(_Run(untyped))) is None  # descriptors not lowered to CUtensorMaps


def test_another_triton_or_launcher_gives_none():
    assert direct_launcher(_Compiled(_Run(lambda *a: None))) is None  # no descriptor wrapper
    assert direct_launcher(object()) is None
    driver = pytest.importorskip("triton.backends.nvidia.driver")
    if getattr(driver, "_BASE_ARGS_FORMAT_LEN", None) == 13:
        pytest.skip("Triton 3.6: checked above")
    wrap = getattr(driver, "wrap_handle_tensordesc")
    inner = wrap(lambda *a: None, {0: "tensordesc<i8[8, 8]>"}, ["m0"])
    assert direct_launcher(_Compiled(_Run(inner))) is None
