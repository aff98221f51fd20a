"""The built-in demo: a small video DiT compiled under several attention policies."""
