"""Django's admin site, answering a signed-in account that is not staff with a 403 that says why.

Django's own admin sends such an account to its login page, where signing in again changes nothing (the account
is already signed in); the product's login page is the only one anyway (urls.py sends /admin/login/ there).
"""

from functools import update_wrapper

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import PermissionDenied

NOT_STAFF = (
    "The admin site (/admin/) is for staff accounts, and yours is not one: everything your role allows is on "
    "the product's pages (the links above). Ask an administrator to mark your account as staff if you need "
    "the admin site."
)


class ProductAdminSite(AdminSite):
    def admin_view(self, view, cacheable=False):
        inner = super().admin_view(view, cacheable)

        def guarded(request, *args, **kwargs):
            if request.user.is_authenticated and not self.has_permission(request):
                raise PermissionDenied(NOT_STAFF)
            return inner(request, *args, **kwargs)

        return update_wrapper(guarded, inner)


class ProductAdminConfig(AdminConfig):
    default_site = "connectors_admin.admin_site.ProductAdminSite"
