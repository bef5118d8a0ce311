"""Single sign-on with OpenID Connect: authorization code flow with PKCE (S256), through authlib's Django client.

authlib reads the provider's discovery document (``<issuer>/.well-known/openid-configuration``), sends the user
to its authorization endpoint with ``state``, ``nonce`` and a PKCE ``code_challenge``, exchanges the code (with
the ``code_verifier``) for tokens, and validates the ID token: RS256/ES256 signature against the provider's JWKS,
``iss``, ``aud``, ``exp``, ``iat`` and ``nonce``. This module turns the validated claims into a user: found by
(issuer, sub), created on first sign-in (or found among the users SCIM provisioned), with the roles of the groups claim applied at
every sign-in (README "Single sign-on").
"""

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from connectors.accounts.models import SsoIdentity

SUPERUSER = "superuser"  # the OIDC_GROUP_MAP target that makes a superuser rather than a group member


class SsoError(Exception):
    """A sign-in that cannot complete; the message is safe to show."""


@dataclass(frozen=True)
class SsoConfig:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str


def is_enabled() -> bool:
    return bool(settings.OIDC_ISSUER_URL and settings.OIDC_CLIENT_ID)


def _config() -> SsoConfig:
    return SsoConfig(settings.OIDC_ISSUER_URL, settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET,
                     settings.OIDC_SCOPES)


@lru_cache(maxsize=4)
def _client_for(config: SsoConfig):
    # One registered client per configuration: authlib keeps the discovery document and the JWKS it fetched
    # (and fetches the JWKS again when a token names a key id it does not know: key rotation at the provider).
    from authlib.integrations.django_client import OAuth

    oauth = OAuth()
    return oauth.register(
        name="oidc",
        client_id=config.client_id,
        client_secret=config.client_secret or None,
        server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": config.scopes, "code_challenge_method": "S256", "timeout": 10},
    )


def client():
    return _client_for(_config())


def _username_for(claims: dict) -> str:
    User = get_user_model()
    wanted = str(claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email") or claims["sub"])[:120]
    if not User.objects.filter(username=wanted).exists():
        return wanted
    # The name is taken by another (local or SSO) account: never merge into it; suffix the subject's hash.
    return f"{wanted[:110]}-{hashlib.sha256(str(claims['sub']).encode()).hexdigest()[:8]}"


def _groups_claim(claims: dict) -> list[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SsoError(f"The identity provider's {settings.OIDC_GROUPS_CLAIM!r} claim is not a list of group names.")
    return [str(item) for item in value]


SPACE_SEPARATOR = "@"  # OIDC_GROUP_MAP target "Connector users@marketing": the role in one space


def _apply_space_roles(user, wanted: set[str], managed: set[str]) -> None:
    """Make the user's grants among the managed (role, space) pairs exactly the wanted ones."""
    from connectors.spaces.models import Space, SpaceRoleGrant

    def pair(target: str) -> tuple[str, str]:
        role, _, space = target.rpartition(SPACE_SEPARATOR)
        return role.strip(), space.strip()

    managed_pairs = {pair(t) for t in managed}
    wanted_pairs = {pair(t) for t in wanted}
    roles = {group.name: group for group in Group.objects.filter(name__in={r for r, _ in managed_pairs})}
    spaces = set(Space.objects.filter(pk__in={s for _, s in managed_pairs}).values_list("pk", flat=True))
    unknown = sorted({f"{r}@{s}" for r, s in managed_pairs if r not in roles or s not in spaces})
    if unknown:
        raise SsoError(f"OIDC_GROUP_MAP names roles or spaces that do not exist here: {', '.join(unknown)}.")
    held = SpaceRoleGrant.objects.filter(user=user, space__isnull=False)
    for held_grant in held.select_related("role"):
        key = (held_grant.role.name, held_grant.space_id)
        if key in managed_pairs and key not in wanted_pairs:
            held_grant.delete()
    for role, space in sorted(wanted_pairs):
        SpaceRoleGrant.objects.get_or_create(user=user, role=roles[role], space_id=space)


def apply_roles(user, idp_groups: list[str]) -> None:
    """Make the user's roles those that OIDC_GROUP_MAP gives their IdP groups.

    Only the groups that appear in the mapping are managed: a group given by hand in /admin/ that no IdP group
    maps to is left alone. Superuser status is managed when "superuser" is a target of the mapping. A target
    ``Role@space`` holds the role in that space only (README "Spaces"): such grants follow the IdP in the same way.
    """
    mapping = settings.OIDC_GROUP_MAP
    wanted = {mapping[name] for name in idp_groups if name in mapping}
    managed = set(mapping.values())
    _apply_space_roles(user, {t for t in wanted if SPACE_SEPARATOR in t}, {t for t in managed if SPACE_SEPARATOR in t})
    wanted = {t for t in wanted if SPACE_SEPARATOR not in t}
    managed = {t for t in managed if SPACE_SEPARATOR not in t}
    if SUPERUSER in managed:
        superuser = SUPERUSER in wanted
        if user.is_superuser != superuser or user.is_staff != superuser:
            user.is_superuser = user.is_staff = superuser
            user.save(update_fields=["is_superuser", "is_staff"])
    managed.discard(SUPERUSER)
    wanted.discard(SUPERUSER)
    groups = {group.name: group for group in Group.objects.filter(name__in=managed)}
    missing = managed - set(groups)
    if missing:
        raise SsoError(f"OIDC_GROUP_MAP names groups that do not exist here: {', '.join(sorted(missing))}.")
    current = set(user.groups.filter(name__in=managed).values_list("name", flat=True))
    if current - wanted:
        user.groups.remove(*(groups[name] for name in sorted(current - wanted)))
    if wanted - current:
        user.groups.add(*(groups[name] for name in sorted(wanted - current)))


def _provisioned_user_for(claims: dict, issuer: str):
    """The user SCIM provisioned for this person (connectors/accounts/scim/), on their first sign-in: the one whose
    SCIM userName is the OIDC_USERNAME_CLAIM of the token (Okta's login, Entra ID's userPrincipalName, which each
    also sends as userName), and that no other subject of this issuer has claimed."""
    from connectors.accounts.models import ScimUser

    name = claims.get(settings.OIDC_USERNAME_CLAIM)
    if not isinstance(name, str) or not name:
        return None
    provisioned = ScimUser.objects.select_related("user").filter(user_name__iexact=name, deleted_at__isnull=True)
    provisioned = provisioned.exclude(user__sso_identities__issuer=issuer).first()
    return provisioned.user if provisioned else None


def user_for_claims(claims: dict):
    """The user these validated ID-token claims identify, created on first sign-in, with roles applied."""
    issuer = str(claims.get("iss") or settings.OIDC_ISSUER_URL)
    subject = str(claims["sub"])
    idp_groups = _groups_claim(claims)
    User = get_user_model()
    with transaction.atomic():
        identity = SsoIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
        if identity is None and (user := _provisioned_user_for(claims, issuer)) is not None:
            identity = SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
        if identity is None:
            user = User(username=_username_for(claims), email=str(claims.get("email") or "")[:254],
                        first_name=str(claims.get("given_name") or "")[:150],
                        last_name=str(claims.get("family_name") or "")[:150])
            user.set_unusable_password()  # signs in through the provider only
            user.save()
            identity = SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
        user = identity.user
        if not user.is_active:
            raise SsoError("This account is disabled here.")
        apply_roles(user, idp_groups)
        identity.last_sign_in_at = timezone.now()
        identity.save(update_fields=["last_sign_in_at"])
    return user
