from django.contrib.auth.decorators import permission_required
from django.http import HttpResponse


@permission_required("usage.view_usage_dashboard", raise_exception=True)
def overview(request):  # replaced by the usage dashboard work
    return HttpResponse("Usage")


@permission_required("usage.view_usage_dashboard", raise_exception=True)
def connector_dashboard(request, connector_id):
    return HttpResponse("Usage dashboard")
