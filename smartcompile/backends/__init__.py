"""Backends: one module per kernel family, capabilities as data, a registry, the custom op.

A backend never reads a policy file: it receives a backend name and a params dict.
"""
from .registry import BACKEND_NAMES, FALLBACK_CHAIN, Selection, get_backend, get_implementation, select

__all__ = ["BACKEND_NAMES", "FALLBACK_CHAIN", "Selection", "get_backend", "get_implementation", "select"]
