"""Passes: find attention sites in a Dynamo FX graph, name their layers, rewrite them."""
from .find import find_attention_sites
from .rewrite import rewrite_site
from .site import AttentionSite

__all__ = ["AttentionSite", "find_attention_sites", "rewrite_site"]
