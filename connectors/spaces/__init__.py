"""Spaces, as Kibana has them: each team its own connectors, API keys, budgets, alerts, events and audit records.

This package is the core of spaces (the model, the role grants, the current space of a request, the URL prefix
``/s/<space id>/``); the spaces API lives in connectors/api/spaces.py and the pages in connectors/pages/spaces.py.
It imports only the caches and the caller's context of ``connectors``, so that the models, the policy and the
lookup can all import it.
"""
