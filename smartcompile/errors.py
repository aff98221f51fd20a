"""Exceptions that users see. Messages name the field, the value and what is allowed."""


class SmartCompileError(Exception):
    """Base class of every error smartcompile raises on purpose."""


class PolicyError(SmartCompileError, ValueError):
    """A policy file or dict is invalid; the message names the JSON path."""


class OptionsError(SmartCompileError, ValueError):
    """Bad `options=` for the smartattn backend."""


class UnsupportedError(SmartCompileError, RuntimeError):
    """No implementation can run a spec (should not happen: flash/sdpa supports all)."""


class UnknownNameError(SmartCompileError, ValueError):
    """A backend, implementation or auto mode that is not registered (a typo in a direct call;
    policies and options report theirs as PolicyError / OptionsError)."""
