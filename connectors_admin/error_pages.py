"""The product's 404 page under DEBUG too (make run turns DEBUG on, connectors_admin/devenv.py).

With DEBUG on, Django answers an unknown address with its technical 404 page, which lists every URL pattern of
the site. This middleware, active only with DEBUG on, answers it with the same page as production
(templates/404.html, in the product's layout). It sits after CommonMiddleware, which still turns a 404 for an
address missing its final slash into a redirect.
"""

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import Http404
from django.shortcuts import render
from django.urls import Resolver404, resolve


def not_found_page(request):
    return render(request, "404.html", status=404)


class ProductNotFoundMiddleware:
    def __init__(self, get_response):
        if not settings.DEBUG:
            raise MiddlewareNotUsed  # production renders templates/404.html itself
        self.get_response = get_response

    def __call__(self, request):
        try:
            resolve(request.path_info)
        except Resolver404:
            return not_found_page(request)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, Http404):
            return not_found_page(request)
        return None
