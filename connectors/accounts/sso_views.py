import logging
from datetime import timedelta

import requests
from authlib.common.errors import AuthlibBaseError
from django.conf import settings
from django.contrib.auth import login
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from joserfc.errors import JoseError

from connectors.accounts import sso
from connectors.audit import context as audit_context
from connectors.audit import sign_ins

log = logging.getLogger(__name__)
NEXT_KEY = "sso_next"
# What a sign-in that cannot be trusted raises: authlib's OAuth errors (state, the provider's error answer),
# joserfc's (signature, expiry, issuer, audience, nonce), the network, and a malformed answer.
VERIFICATION_ERRORS = (AuthlibBaseError, JoseError, requests.RequestException, ValueError, KeyError)


def sso_login(request):
    if not sso.is_enabled():
        raise Http404("Single sign-on is not configured.")
    next_url = request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(next_url, {request.get_host()}, require_https=request.is_secure()):
        request.session[NEXT_KEY] = next_url
    try:
        return sso.client().authorize_redirect(request, request.build_absolute_uri(reverse("sso_callback")))
    except (requests.RequestException, ValueError) as exc:  # discovery failed: say so, never a 500
        log.warning("single sign-on: the identity provider's discovery document could not be read: %s", exc)
        return _refused(request, "The identity provider could not be reached.", status=502)


def sso_callback(request):
    if not sso.is_enabled():
        raise Http404("Single sign-on is not configured.")
    with audit_context.acting(sign_in_method="sso"):
        try:
            token = sso.client().authorize_access_token(request)
            claims = token.get("userinfo")
            if not claims:
                # authlib validates an ID token only when there is one: a token response without one is refused.
                raise sso.SsoError("The identity provider returned no ID token.")
            user = sso.user_for_claims(dict(claims))
        except sso.SsoError as exc:
            sign_ins.failed("", "sso", request=request)
            return _refused(request, str(exc))
        except VERIFICATION_ERRORS as exc:  # bad state, signature, issuer, audience, expiry, nonce, or network
            log.warning("single sign-on refused: %s: %s", type(exc).__name__, exc)
            sign_ins.failed("", "sso", request=request)
            return _refused(request, "The sign-in could not be verified. Try again.")
        login(request, user, backend="connectors.accounts.backends.SsoSessionBackend")
    # A fixed end (a datetime, not an idle time): activity does not extend it, so the provider is asked again.
    request.session.set_expiry(timezone.now() + timedelta(seconds=settings.SSO_SESSION_MAX_AGE_SECONDS))
    return redirect(request.session.pop(NEXT_KEY, "") or "home")


def _refused(request, message: str, status: int = 400):
    return render(request, "registration/sso_error.html", {"message": message}, status=status)
