"""smartcompile: a torch.compile backend ("smartattn") that gives every attention layer the
kernel its policy asks for (Flash exact, Sage quantized, Sparge block-sparse)."""
from ._version import __version__
from .api import explain
from .compiler import Plan, PlannedSite, backend
from .errors import OptionsError, PolicyError, SmartCompileError, UnsupportedError
from .policies import Policy, Rule
from .profiling import Metric, profile
from .spec import AttentionSpec

__all__ = [
    "AttentionSpec", "Metric", "OptionsError", "Plan", "PlannedSite", "Policy", "PolicyError", "Rule",
    "SmartCompileError", "UnsupportedError", "backend", "explain", "profile",
]
