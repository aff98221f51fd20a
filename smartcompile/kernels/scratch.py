"""Intermediate buffers of one attention call, kept for the next call of the same shape (issue 13: host cost).

A Sage call allocates ~9 tensors for its quantized Q/K/V, scales and partials, a Sparge call ~17; each
`torch.empty` costs ~4-5 us of host time on the H200 machine (`bench_host.py`: 11 of them took 44-49 us). They
live only inside the call: the attention entry points quantize, enqueue the kernels that read the buffers, and
are done with them. So an entry point may `take` a shape's buffers, use them, and `give` them back once
everything that reads them is enqueued; the next call of that shape on the same stream reuses them.

Why that is safe:
- One stream executes in order, so the next call's writes run after this call's reads. The key holds the
  device and the current stream: another stream never gets the same buffers.
- `take` removes the entry, so a concurrent caller (another thread) finds none and allocates its own.
- Only the device's default stream reuses. That keeps out CUDA-graph capture (the graph would keep the
  addresses) and CUDA-graph trees' warm-up (torch.compile "reduce-overhead"): it runs eagerly on the tree's own
  stream but allocates from the graph's private pool, whose blocks the tree hands out again when it rewinds the
  pool; a buffer kept from there could alias a graph's memory. Work on other streams allocates as before.
- A caller that keeps the buffers (returns them, or fails before giving them back) just never gives them back.

Memory: entries hold at most `MAX_BYTES` each and `MAX_ENTRIES` in all (least recently given back dropped
first); `clear()` frees them. The caching allocator kept those blocks reserved between calls anyway; now they
count as allocated.
"""
from __future__ import annotations

import collections
from typing import Optional

import torch

MAX_ENTRIES = 8
MAX_BYTES = 1 << 28  # 256 MiB: B1 H24 16k D128 Sage quantization is ~160 MB
# On since session 10: tests/test_gpu_scratch.py passed on the H200 and bench_sparge.py measured Sparge at B1 H24
# 3703 tokens D128 density 0.5 going from 0.63-0.69x to 1.22-1.24x cuDNN (two runs, either order).
ENABLED = True

_FREE: collections.OrderedDict = collections.OrderedDict()
_DEFAULT_STREAM: dict = {}  # device index -> raw handle of its default stream


def _where(device: torch.device) -> Optional[tuple]:
    """(device index, raw stream) when the current stream on `device` is its default stream; None where reuse
    is off (disabled, not CUDA, or another stream: see the module docstring)."""
    return on_default_stream(device) if ENABLED else None


def on_default_stream(device: torch.device) -> Optional[tuple]:
    """(device index, raw stream) when work on `device` goes to its default stream and no CUDA graph is being
    captured: where a tensor may be kept across calls (the module docstring says why nowhere else); None elsewhere."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    stream = raw(index) if raw is not None else torch.cuda.current_stream(index).cuda_stream
    default = _DEFAULT_STREAM.get(index)
    if default is None:
        default = _DEFAULT_STREAM[index] = torch.cuda.default_stream(index).cuda_stream
    if stream != default or torch.cuda.is_current_stream_capturing():
        return None
    return index, stream


def take(device: torch.device, key: tuple) -> Optional[tuple]:
    """The buffers given back for `key` on this device and stream, removed from the cache; None if there are
    none (allocate, and `give` them back when done)."""
    where = _where(device)
    return None if where is None else _FREE.pop((where, key), None)


def give(device: torch.device, key: tuple, buffers: tuple) -> None:
    """Hand `buffers` back for the next call of `key`: only once every kernel that reads them is enqueued on
    the current stream."""
    where = _where(device)
    if where is None:
        return
    size = sum(t.numel() * t.element_size() for t in buffers if t is not None)
    if size > MAX_BYTES:
        return
    # pop, then insert: the entry goes last (most recent) with no step another thread's take could break
    _FREE.pop((where, key), None)
    _FREE[(where, key)] = buffers
    while len(_FREE) > MAX_ENTRIES:
        _FREE.popitem(last=False)


def clear() -> None:
    """Drop every kept buffer (the caching allocator gets them back)."""
    _FREE.clear()


def held_bytes() -> int:
    return sum(t.numel() * t.element_size() for buffers in _FREE.values() for t in buffers if t is not None)
