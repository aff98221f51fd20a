"""Kernels: Triton kernels and the pure-torch references beside them.

Nothing here knows about graphs, policies or backends.
"""
