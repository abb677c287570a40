"""YAML search spaces and their loader (filled in by the distributed-search issue)."""
