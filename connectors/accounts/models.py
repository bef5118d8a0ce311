import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower


class SsoIdentity(models.Model):
    """Links a user to the identity provider's subject: a sign-in finds its user by (issuer, sub), never by a
    name or e-mail the provider lets people choose, so an IdP account cannot take over a local one."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_issuer_subject")]
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"

    def __str__(self) -> str:
        return f"{self.user} @ {self.issuer}"


class ScimUser(models.Model):
    """A user provisioned by the identity provider over SCIM (connectors/accounts/scim/, README "SCIM
    provisioning"). The SCIM ``id`` is a random UUID, not the user's primary key, so that SCIM can only ever name
    the users it manages. ``user_name`` is the SCIM ``userName`` as the provider sent it; a first SSO sign-in whose
    OIDC_USERNAME_CLAIM equals it (ignoring case) is linked to this user."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scim")
    scim_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    user_name = models.CharField(max_length=255)
    external_id = models.CharField(max_length=255, blank=True)
    display_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # DELETE /Users/<id>: the user is kept, inactive, for the audit trail; SCIM no longer sees it.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SCIM user"
        constraints = [
            # The filter userName eq "x" and the SSO link look users up by name, case-insensitively (RFC 7643
            # makes userName case-insensitive), among those not deleted.
            models.UniqueConstraint(Lower("user_name"), condition=models.Q(deleted_at__isnull=True),
                                    name="scim_user_name_unique"),
        ]

    def __str__(self) -> str:
        return self.user_name


class ScimGroup(models.Model):
    """A group pushed by the identity provider over SCIM. Its members get the roles that OIDC_GROUP_MAP gives its
    ``display_name`` or its ``external_id`` (Entra ID's group object id, the value of its groups claim)."""

    scim_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField(max_length=255)
    external_id = models.CharField(max_length=255, blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="scim_groups", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "SCIM group"
        constraints = [
            # The filter displayName eq "x" looks groups up by name, case-insensitively.
            models.UniqueConstraint(Lower("display_name"), name="scim_group_display_name_unique"),
        ]

    def __str__(self) -> str:
        return self.display_name

    def mapping_keys(self) -> list[str]:
        """The names OIDC_GROUP_MAP may know this group by."""
        return [name for name in (self.display_name, self.external_id) if name]
