"""Backends: one module per kernel family, capabilities as data, a registry, the custom op.

A backend never reads a policy file: it receives a backend name and a params dict.
"""
from .registry import BACKENDS, Selection, get_backend, get_implementation, priority_order, register, select, unregister

__all__ = ["BACKENDS", "Selection", "get_backend", "get_implementation", "priority_order", "register", "select",
           "unregister"]
