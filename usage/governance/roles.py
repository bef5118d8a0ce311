"""Governance's share of the roles, kept in step by migrate (connectors/roles.py syncs each app's share).

Connector admins manage what governs their connectors: prices, per-connector pricing, connector budgets and rate
limits, alert channels and error-rate rules, and read the alerts. The Usage viewers role gets nothing here: budgets
and limits are policy that connector admins own, the dashboards already show every connector's spend, and each
user sees their own budgets on "My usage" (/usage/me/) without any role.
"""

from usage.governance import permissions as p

ROLES: dict[str, list[str]] = {
    "Connector admins": [
        p.VIEW_BUDGET, p.ADD_BUDGET, p.CHANGE_BUDGET, p.DELETE_BUDGET,
        p.VIEW_RATE_LIMIT, p.ADD_RATE_LIMIT, p.CHANGE_RATE_LIMIT, p.DELETE_RATE_LIMIT,
        p.VIEW_PRICE, p.ADD_PRICE, p.CHANGE_PRICE, p.DELETE_PRICE,
        p.VIEW_CONNECTOR_PRICING, p.ADD_CONNECTOR_PRICING, p.CHANGE_CONNECTOR_PRICING,
        p.VIEW_ALERT,
        p.VIEW_ALERT_CHANNEL, p.ADD_ALERT_CHANNEL, p.CHANGE_ALERT_CHANNEL, p.DELETE_ALERT_CHANNEL,
        p.VIEW_ERROR_RATE_RULE, p.ADD_ERROR_RATE_RULE, p.CHANGE_ERROR_RATE_RULE, p.DELETE_ERROR_RATE_RULE,
    ],
}
