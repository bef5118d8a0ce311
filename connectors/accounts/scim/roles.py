"""Roles from SCIM groups: the same mapping as single sign-on's groups claim (OIDC_GROUP_MAP, applied by
``sso.apply_roles``), read from the groups the provider has pushed and the user's memberships in them."""

from connectors.accounts import sso
from connectors.accounts.scim.protocol import ScimError


def sync_roles(users) -> None:
    """Give each user exactly the roles OIDC_GROUP_MAP gives their SCIM groups (roles outside the map untouched)."""
    for user in users:
        keys = [key for group in user.scim_groups.all() for key in group.mapping_keys()]
        try:
            sso.apply_roles(user, keys)
        except sso.SsoError as exc:  # the map names a role that does not exist here: a configuration error
            raise ScimError(400, str(exc), "invalidValue") from None
