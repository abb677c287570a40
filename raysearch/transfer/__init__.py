from .groups import GROUPS, group_of
