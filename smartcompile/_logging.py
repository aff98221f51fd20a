"""The "smartcompile" logger. SMARTCOMPILE_LOG=info|debug|warning is read at compile time."""
from __future__ import annotations

import logging
import os

logger = logging.getLogger("smartcompile")
_ENV = "SMARTCOMPILE_LOG"
_handler: logging.Handler | None = None


def configure_from_env() -> None:
    """Attach one stderr handler at the level SMARTCOMPILE_LOG names (once; never at import)."""
    global _handler
    level_name = os.environ.get(_ENV, "").strip().upper()
    if not level_name:
        return
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        logger.warning("%s=%r is not a logging level; use debug, info or warning", _ENV, level_name.lower())
        return
    logger.setLevel(level)
    if _handler is None:
        _handler = logging.StreamHandler()
        _handler.setFormatter(logging.Formatter("[smartcompile] %(levelname)s %(message)s"))
        logger.addHandler(_handler)
