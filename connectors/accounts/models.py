from django.conf import settings
from django.db import models


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
