"""The torch.compile backend "smartattn"."""
from .backend import SmartAttnBackend, backend, smartattn
from .plan import Plan, PlannedSite

__all__ = ["Plan", "PlannedSite", "SmartAttnBackend", "backend", "smartattn"]
