from django.conf import settings
from django.contrib.auth.backends import ModelBackend

from connectors.access.policy import password_sign_in_allowed


def password_login_allowed(user) -> bool:
    """Whether this user may sign in with a password (the login page, HTTP Basic on the APIs)."""
    return password_sign_in_allowed(user, settings.LOCAL_LOGIN_SUPERUSERS_ONLY)


class LocalPasswordBackend(ModelBackend):
    """Django's username-and-password backend (the login page and HTTP Basic), which can be limited to superusers
    (LOCAL_LOGIN_SUPERUSERS_ONLY) when everyone else signs in with single sign-on."""

    def user_can_authenticate(self, user) -> bool:
        if not password_login_allowed(user):
            return False
        return super().user_can_authenticate(user)


class SsoSessionBackend(ModelBackend):
    """The backend a session opened by an SSO sign-in is bound to. It checks no password (``authenticate`` finds
    nobody), and keeps the session while the user is active, whatever LOCAL_LOGIN_SUPERUSERS_ONLY says: that
    setting limits password sign-in, not the sessions single sign-on opens."""

    def authenticate(self, request, **credentials):
        return None
