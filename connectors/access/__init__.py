"""Who may do what: the role registry (roles.py) and the one policy every page and API asks (policy.py)."""
