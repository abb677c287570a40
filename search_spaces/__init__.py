"""YAML search spaces over how / what / when to transfer, and their loader/validator."""
from .space import SearchSpace, list_spaces, load_space, space_from_dict

__all__ = ["SearchSpace", "list_spaces", "load_space", "space_from_dict"]
