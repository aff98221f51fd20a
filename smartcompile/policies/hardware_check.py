"""A profiled policy records the hardware it was measured on; elsewhere, say what is re-checked."""
from __future__ import annotations

from typing import Optional

from ..backends.hardware import fingerprint_differences, hardware_fingerprint
from .policy import Policy


def hardware_mismatch(policy: Policy, device: str) -> Optional[str]:
    """None when the policy carries no fingerprint or it matches `device`; else the message."""
    recorded = policy.metadata.get("hardware")
    if not isinstance(recorded, dict):
        return None
    diffs = fingerprint_differences(recorded, hardware_fingerprint(device))
    if not diffs:
        return None
    return (
        f"policy {policy.source} was profiled on other hardware ({'; '.join(diffs)}). Re-checked here: each "
        "layer's choice against this device's capabilities (a choice it cannot run falls back, with its reason, "
        "in explain). Not re-checked: the timings and the error budget, which were measured there; run "
        "`smartcompile profile` on this machine to re-measure."
    )
