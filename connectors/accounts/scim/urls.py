from django.urls import re_path

from connectors.accounts.scim import views

# Without trailing slashes, as Okta and Entra ID call them (a slash is accepted too: no redirect, which a
# provider would not follow with its POST body).
urlpatterns = [
    re_path(r"^Users/?$", views.user_list, name="scim_users"),
    re_path(r"^Users/(?P<scim_id>[^/]+)/?$", views.user_detail, name="scim_user"),
    re_path(r"^Groups/?$", views.group_list, name="scim_groups"),
    re_path(r"^Groups/(?P<scim_id>[^/]+)/?$", views.group_detail, name="scim_group"),
    re_path(r"^ServiceProviderConfig/?$", views.service_provider_config, name="scim_service_provider_config"),
]
