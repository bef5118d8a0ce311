"""The governance capabilities, by the dotted name ``has_perm`` takes (Django's model permissions of the governance
models): used by the Connector admins role (``ROLES`` below), the pages and the connector page.

Budgets and rate limits of a user or an API key are managed by superusers only, whatever permissions a user holds:
they govern people, not connectors (enforced in usage/governance/pages/forms.py and views.py).
"""

VIEW_BUDGET = "governance.view_budget"
ADD_BUDGET = "governance.add_budget"
CHANGE_BUDGET = "governance.change_budget"
DELETE_BUDGET = "governance.delete_budget"

VIEW_RATE_LIMIT = "governance.view_ratelimit"
ADD_RATE_LIMIT = "governance.add_ratelimit"
CHANGE_RATE_LIMIT = "governance.change_ratelimit"
DELETE_RATE_LIMIT = "governance.delete_ratelimit"

VIEW_PRICE = "governance.view_price"
ADD_PRICE = "governance.add_price"
CHANGE_PRICE = "governance.change_price"
DELETE_PRICE = "governance.delete_price"

VIEW_CONNECTOR_PRICING = "governance.view_connectorpricing"
CHANGE_CONNECTOR_PRICING = "governance.change_connectorpricing"
ADD_CONNECTOR_PRICING = "governance.add_connectorpricing"

VIEW_ALERT = "governance.view_alert"
VIEW_ALERT_CHANNEL = "governance.view_alertchannel"
ADD_ALERT_CHANNEL = "governance.add_alertchannel"
CHANGE_ALERT_CHANNEL = "governance.change_alertchannel"
DELETE_ALERT_CHANNEL = "governance.delete_alertchannel"
VIEW_ERROR_RATE_RULE = "governance.view_errorraterule"
ADD_ERROR_RATE_RULE = "governance.add_errorraterule"
CHANGE_ERROR_RATE_RULE = "governance.change_errorraterule"
DELETE_ERROR_RATE_RULE = "governance.delete_errorraterule"

# Governance's share of the roles (connectors/access/roles.py keeps them in step at each migrate).
# Connector admins manage what governs their connectors: prices, per-connector pricing, connector budgets and rate
# limits, alert channels and error-rate rules, and read the alerts. The Usage viewers role gets nothing here: budgets
# and limits are policy that connector admins own, the dashboards already show every connector's spend, and each
# user sees their own budgets on "My usage" (/usage/me/) without any role.
ROLES: dict[str, list[str]] = {
    "Connector admins": [
        VIEW_BUDGET, ADD_BUDGET, CHANGE_BUDGET, DELETE_BUDGET,
        VIEW_RATE_LIMIT, ADD_RATE_LIMIT, CHANGE_RATE_LIMIT, DELETE_RATE_LIMIT,
        VIEW_PRICE, ADD_PRICE, CHANGE_PRICE, DELETE_PRICE,
        VIEW_CONNECTOR_PRICING, ADD_CONNECTOR_PRICING, CHANGE_CONNECTOR_PRICING,
        VIEW_ALERT,
        VIEW_ALERT_CHANNEL, ADD_ALERT_CHANNEL, CHANGE_ALERT_CHANNEL, DELETE_ALERT_CHANNEL,
        VIEW_ERROR_RATE_RULE, ADD_ERROR_RATE_RULE, CHANGE_ERROR_RATE_RULE, DELETE_ERROR_RATE_RULE,
    ],
}
