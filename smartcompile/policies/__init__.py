"""Policies: the per-layer decision data (JSON), its validation, and resolution."""
from .policy import POLICY_VERSION, Policy, Rule
from .resolve import Decision, resolve, unmatched_rules

__all__ = ["POLICY_VERSION", "Policy", "Rule", "Decision", "resolve", "unmatched_rules"]
