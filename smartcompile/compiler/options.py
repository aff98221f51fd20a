"""Options of the smartattn backend, validated with clear errors."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Optional

from ..backends.registry import AUTO_MODES
from ..errors import OptionsError
from ..policies import Policy

OWN_KEYS = ("policy", "mode", "auto")


def inductor_modes() -> list:
    import torch._inductor

    return ["default"] + [m for m in ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
                          if _mode_ok(torch._inductor, m)]


def _mode_ok(inductor, mode: str) -> bool:
    try:
        inductor.list_mode_options(mode)
    except (KeyError, RuntimeError):
        return False
    return True


def inductor_config_keys() -> list:
    import torch._inductor

    return list(torch._inductor.list_options())


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    policy: Policy
    mode: Optional[str] = None
    inductor_config: dict = dataclasses.field(default_factory=dict)
    auto: str = "measure"  # how "auto" decides on CUDA: measure (time candidates, cached) or static

    @classmethod
    def parse(cls, options: Optional[dict], mode: Optional[str] = None, policy: Any = None,
              auto: Optional[str] = None) -> "CompileOptions":
        if options is not None and not isinstance(options, dict):
            raise OptionsError(f"options: expected a dict such as {{'policy': 'policy.json'}}, got "
                               f"{type(options).__name__} {options!r:.80}")
        options = dict(options or {})
        inductor_keys = set(inductor_config_keys())
        for key in options:
            if key not in OWN_KEYS and key not in inductor_keys:
                close = difflib.get_close_matches(str(key), list(OWN_KEYS) + sorted(inductor_keys), n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise OptionsError(
                    f"options[{key!r}]: unknown key; allowed: {list(OWN_KEYS)} or an Inductor config key "
                    f"(torch._inductor.list_options()){hint}"
                )
        if "mode" in options:
            if mode is not None and options["mode"] != mode:
                raise OptionsError(f"options['mode']={options['mode']!r} conflicts with mode={mode!r}")
            mode = options.pop("mode")
        if mode is not None and mode not in inductor_modes():
            raise OptionsError(f"mode: {mode!r} is not allowed; expected one of {inductor_modes()}")
        if "auto" in options:
            if auto is not None and options["auto"] != auto:
                raise OptionsError(f"options['auto']={options['auto']!r} conflicts with auto={auto!r}")
            auto = options.pop("auto")
        auto = "measure" if auto is None else auto
        if auto not in AUTO_MODES:
            raise OptionsError(f"auto: {auto!r} is not allowed; expected one of {list(AUTO_MODES)}")
        pol = Policy.coerce(options.pop("policy", policy))
        return cls(policy=pol, mode=None if mode == "default" else mode, inductor_config=options, auto=auto)

    def config_patches(self) -> dict:
        import torch._inductor

        patches = dict(torch._inductor.list_mode_options(self.mode)) if self.mode else {}
        patches.update(self.inductor_config)
        return patches
