"""Layer-sensitivity profiling: from a calibration run to a per-layer policy file."""
from .candidates import ProfileCandidate, default_candidates
from .metric import BUILTIN_METRICS, Metric
from .profile import profile

__all__ = ["BUILTIN_METRICS", "Metric", "ProfileCandidate", "default_candidates", "profile"]
