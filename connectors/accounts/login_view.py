"""The login page, throttled like HTTP Basic (connectors/throttling/failures.py, README "Throttles")."""

from django.contrib.auth.views import LoginView
from django.shortcuts import render

from connectors.throttling import failures
from connectors.throttling.failures import Throttled, client_address


class ThrottledLoginView(LoginView):
    """Django's LoginView; each POST counts as an attempt for its address and username, a success takes it back,
    and over a limit the page answers 429 without checking the password."""

    def post(self, request, *args, **kwargs):
        username = str(request.POST.get("username", ""))[:150]
        try:
            failures.count_attempt(client_address(request), username)
        except Throttled as exc:
            response = render(request, "registration/throttled.html", {"message": exc.message,
                                                                        "retry_after": exc.retry_after}, status=429)
            response["Retry-After"] = str(exc.retry_after)
            return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        failures.succeeded(client_address(self.request), form.get_user().get_username())
        return super().form_valid(form)

    def form_invalid(self, form):
        failures.failed(client_address(self.request), str(self.request.POST.get("username", "")))
        return super().form_invalid(form)
