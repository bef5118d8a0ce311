"""A page that says the database is unavailable (HTTP 503), instead of the 500 page, while it cannot be reached.

A login, or any page, needs the database (the user, the session, the failed-login counts); when it is stopped,
restarting or cut off, Django raises OperationalError or InterfaceError and would answer 500 "Something went
wrong". This middleware answers ``templates/503.html`` with ``Retry-After`` instead (README "Guarantees"). The JSON
APIs answer their own 503 bodies (connectors/api/endpoint.py) and never get here.
"""

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


class DatabaseOutageMiddleware(MiddlewareMixin):  # sync and async, so pages stay on the async path under ASGI
    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning("%s %s answered 503: the database is unavailable: %s", request.method, request.path, exception)
        # Rendered without a request context: the context processors would read the session and the user again.
        response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
