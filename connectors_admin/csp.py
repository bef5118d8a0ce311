"""The Content-Security-Policy header (Django 5.2 has no CSP support of its own).

The pages load scripts and styles from this server only (static/js, static/css; plotly.js is served by
whitenoise, README "Usage dashboards"); data for scripts is rendered with ``json_script``, which browsers do not
execute. So the policy needs no nonce and no 'unsafe-inline' for scripts. The policy is the setting
CONTENT_SECURITY_POLICY (README "Configuration"); an empty setting sends no header.

One exception: plotly.js writes style rules and style attributes into the page as it draws, which a strict
style-src refuses, so a page that draws charts marks its response (``csp_allows_inline_styles``, set by
usage/dashboards/charts.py) and gets 'unsafe-inline' for styles only: scripts stay 'self' there too.
"""

from django.conf import settings


def add_content_security_policy(response):
    """Set the policy on ``response`` unless the view set one itself."""
    policy = settings.CONTENT_SECURITY_POLICY
    if policy and "Content-Security-Policy" not in response.headers:
        if getattr(response, "csp_allows_inline_styles", False) and "style-src 'self'" in policy:
            policy = policy.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'", 1)
        response.headers["Content-Security-Policy"] = policy
    return response


class ContentSecurityPolicyMiddleware:
    """Adds the header to every response of the full middleware stack (the API's short path adds it itself)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return add_content_security_policy(self.get_response(request))

    async def __acall__(self, request):
        return add_content_security_policy(await self.get_response(request))
