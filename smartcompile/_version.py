"""The package version (one place; read by caches that must not outlive a code change)."""
__version__ = "0.1.0"


def version_line() -> str:
    """'smartcompile 0.1.0 (torch 2.13.0+cpu, triton 3.9.0)' for `--version`: read from the installed
    packages' metadata, so that printing it imports neither torch nor triton."""
    from importlib import metadata

    parts = []
    for name in ("torch", "triton"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return f"smartcompile {__version__} ({', '.join(parts)})"
