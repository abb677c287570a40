from .groups import group_of, names_in_groups
