"""raysearch: search how, what and when to transfer while structurally pruning a transformer."""
__version__ = "0.1.0"
