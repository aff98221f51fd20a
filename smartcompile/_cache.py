"""Where smartcompile keeps measurements between runs: $SMARTCOMPILE_CACHE_DIR, else
$XDG_CACHE_HOME/smartcompile, else ~/.cache/smartcompile. Created on first write only.

Caches are a convenience, never an input we trust: whatever is read back is bounded in size,
decoded defensively and validated by its owner; anything else is skipped (one warning per file)
and measured again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from ._logging import logger

CACHE_FORMAT = 1  # written into every cache file / line; other values are ignored on read
MAX_CACHE_FILE_BYTES = 64 * 2**20  # a real cache is a few hundred KiB; larger is not ours
MAX_CACHE_LINE_BYTES = 2**20  # one JSON-lines record is well under 10 KiB

_warned: set[str] = set()  # cache files already warned about in this process


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
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def warn_once(path: Path, message: str) -> None:
    """logger.warning(message), at most once per cache file and process (a cache is opened once
    per compiled attention site: a bad file must not repeat its warning for each)."""
    key = str(path)
    if key not in _warned:
        _warned.add(key)
        logger.warning("%s", message)


def parse_json(text: str) -> tuple[Any, Optional[str]]:
    """(value, None) or (None, why not). NaN/Infinity literals are accepted here (older caches
    wrote them); the owner's validation decides whether a non-finite number is acceptable."""
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as exc:  # JSONDecodeError, or an integer past Python's digit limit
        return None, f"invalid JSON ({exc})"


def read_cache_bytes(path: Path) -> tuple[Optional[bytes], Optional[str]]:
    """(contents, None), (None, None) when there is no file, or (None, why it cannot be used).
    Reads at most one byte past the limit: neither a huge file nor a device file is read without end."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CACHE_FILE_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if len(data) > MAX_CACHE_FILE_BYTES:
        return None, f"over the {MAX_CACHE_FILE_BYTES}-byte limit"
    return data, None


def iter_json_lines(data: bytes) -> Iterator[tuple[int, Any, Optional[str]]]:
    """(line number, value, None) per readable JSON line, (line number, None, why) per bad one;
    blank lines are skipped. Lines are decoded one by one, so one bad byte costs one line."""
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_CACHE_LINE_BYTES:
            yield n, None, f"longer than {MAX_CACHE_LINE_BYTES} bytes"
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield n, None, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            continue
        value, problem = parse_json(text)
        yield n, value, problem
