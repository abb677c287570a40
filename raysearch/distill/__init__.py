"""Distillation from a dense teacher (off by default; `distill:` in the config)."""
