"""The package version (one place; read by caches that must not outlive a code change)."""
__version__ = "0.1.0"
