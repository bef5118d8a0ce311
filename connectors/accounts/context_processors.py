from django.conf import settings

from connectors.accounts import sso


def single_sign_on(request) -> dict:
    """The login page's "Sign in with <provider>" button (templates/registration/login.html)."""
    if not sso.is_enabled():
        return {}
    return {
        "sso_provider_name": settings.OIDC_PROVIDER_NAME,
        "local_login_superusers_only": settings.LOCAL_LOGIN_SUPERUSERS_ONLY,
    }
