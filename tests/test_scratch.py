"""kernels/scratch.py's bookkeeping, with the device/stream lookup stubbed (no GPU here); the GPU side (same
bits as fresh buffers, streams kept apart) is in test_gpu_scratch.py."""
import pytest
import torch

from smartcompile.kernels import scratch


@pytest.fixture
def on_stream(monkeypatch):
    where = {"stream": 1}
    monkeypatch.setattr(scratch, "_where", lambda device: (0, where["stream"]) if device.type == "cuda" else None)
    monkeypatch.setattr(scratch, "_FREE", type(scratch._FREE)())
    return where


CUDA = torch.device("cuda")


def test_take_gives_back_only_what_was_given_for_that_key_and_stream(on_stream):
    bufs = (torch.zeros(4), None)
    assert scratch.take(CUDA, ("k", 1)) is None
    scratch.give(CUDA, ("k", 1), bufs)
    assert scratch.take(CUDA, ("k", 2)) is None  # another shape
    on_stream["stream"] = 2
    assert scratch.take(CUDA, ("k", 1)) is None  # another stream
    on_stream["stream"] = 1
    assert scratch.take(CUDA, ("k", 1)) is bufs
    assert scratch.take(CUDA, ("k", 1)) is None  # taken: a second (concurrent) caller allocates its own


def test_entries_and_sizes_are_bounded(on_stream, monkeypatch):
    monkeypatch.setattr(scratch, "MAX_ENTRIES", 2)
    for i in range(3):
        scratch.give(CUDA, ("k", i), (torch.zeros(4),))
    assert scratch.take(CUDA, ("k", 0)) is None  # least recently given back: dropped
    assert scratch.take(CUDA, ("k", 2)) is not None
    monkeypatch.setattr(scratch, "MAX_BYTES", 8)
    scratch.give(CUDA, ("big",), (torch.zeros(4),))  # 16 bytes > 8: not kept
    assert scratch.take(CUDA, ("big",)) is None
    scratch.clear()
    assert scratch.held_bytes() == 0


def test_cpu_tensors_are_never_kept(monkeypatch):
    monkeypatch.setattr(scratch, "ENABLED", True)  # on: only the device keeps them out
    monkeypatch.setattr(scratch, "_FREE", type(scratch._FREE)())
    cpu = torch.device("cpu")
    scratch.give(cpu, ("k",), (torch.zeros(4),))
    assert scratch.take(cpu, ("k",)) is None


def test_only_the_default_stream_outside_capture_reuses(monkeypatch):
    """Side streams (CUDA-graph trees' warm-up runs on one, allocating from a graph's pool) and capture keep
    nothing: the CUDA calls `_where` makes are stubbed with a device whose default stream is handle 0."""
    class Stream:
        def __init__(self, handle):
            self.cuda_stream = handle

    state = {"stream": 0, "capturing": False}
    monkeypatch.setattr(scratch, "ENABLED", True)
    monkeypatch.setattr(scratch, "_FREE", type(scratch._FREE)())
    monkeypatch.setattr(scratch, "_DEFAULT_STREAM", {})
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: state["stream"], raising=False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "default_stream", lambda index: Stream(0))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: state["capturing"])
    bufs = (torch.zeros(4),)
    for stream, capturing in [(7, False), (0, True)]:
        state.update(stream=stream, capturing=capturing)
        scratch.give(CUDA, ("k",), bufs)
        assert scratch.held_bytes() == 0, (stream, capturing)
    state.update(stream=0, capturing=False)
    scratch.give(CUDA, ("k",), bufs)
    state["stream"] = 7
    assert scratch.take(CUDA, ("k",)) is None
    state["stream"] = 0
    assert scratch.take(CUDA, ("k",)) is bufs
