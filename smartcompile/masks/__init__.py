"""Attention masks as structure: each type keeps a predicate over (batch, head, query, key) indices
and can classify (query block, key block) pairs as empty / full / partial for block kernels.

The bottom layer: imports only torch, so passes (recognition) and kernels (consumption) both use it."""
from .base import BlockKind, MaskType, Shape
from .causal import Causal
from .combine import And, intersect
from .dense import DenseAdditive, DenseBool
from .document import Document
from .no_mask import NoMask
from .padding import KeyLengths, KeyPadding
from .prefix_lm import PrefixLM
from .sliding import SlidingWindow

__all__ = ["And", "BlockKind", "Causal", "DenseAdditive", "DenseBool", "Document", "KeyLengths", "KeyPadding",
           "MaskType", "NoMask", "PrefixLM", "Shape", "SlidingWindow", "intersect"]
