"""Where smartcompile keeps measurements between runs: $SMARTCOMPILE_CACHE_DIR, else
$XDG_CACHE_HOME/smartcompile, else ~/.cache/smartcompile. Created on first write only."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("SMARTCOMPILE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "smartcompile"


def digest(data: object) -> str:
    """Short stable hash of JSON-able data (cache keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, data: object) -> None:
    """Write via a temporary file and rename, so an interrupted write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
