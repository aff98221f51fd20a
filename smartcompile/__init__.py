"""smartcompile: a torch.compile backend ("smartattn") that gives every attention layer the
kernel its policy asks for (Flash exact, Sage quantized, Sparge block-sparse)."""
from ._version import __version__
from .api import explain
from .backends.denoising_step import step
from .compiler import Plan, PlannedSite, backend
from .compiler.layer_dispatch import name_layers
from .compile_model import compile
from .errors import OptionsError, PolicyError, SmartCompileError, UnknownNameError, UnsupportedError
from .policies import Policy, Rule
from .profiling import Metric, profile
from .spec import AttentionSpec
from .step_tracking import track_steps

__all__ = [
    "AttentionSpec", "Metric", "OptionsError", "Plan", "PlannedSite", "Policy", "PolicyError", "Rule",
    "SmartCompileError", "UnknownNameError", "UnsupportedError", "backend", "compile", "explain", "name_layers", "profile", "step", "track_steps",
]
