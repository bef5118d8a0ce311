"""The governance capabilities, by the dotted name ``has_perm`` takes (Django's model permissions of the governance
models): used by the Connector admins role (usage/governance/roles.py), the pages and the connector page.

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
