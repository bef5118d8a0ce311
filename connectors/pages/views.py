"""The connector pages: list, create, details (with the test panel), edit, delete, and the test panel's action.

Each view needs one capability (connectors/permissions.py): anonymous users are sent to the login page, others
without it get 403. A URL's id becomes a connector through connectors.lookup (404 when there is none).
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_POST
from django.views.generic import CreateView, DeleteView, DetailView, ListView, UpdateView

from connectors import untrusted_json, validation
from connectors.access.policy import PermissionRequired, require
from connectors.lookup import ConnectorNotFound, get_connector_or_404, in_space
from connectors.models import Connector, Provider
from connectors.outbound.execution import ConnectorUnavailable, connector_to_execute, execute
from connectors.outbound.providers import default_test_body
from connectors.outbound.record import refuse_before_start
from connectors.pages import connector_list
from connectors.pages.forms import ConnectorForm
from connectors.permissions import (
    ADD_CONNECTOR,
    CHANGE_CONNECTOR,
    DELETE_CONNECTOR,
    EXECUTE_CONNECTOR,
    VIEW_CONNECTOR,
)
from connectors.spaces.current import current_space_id
from usage.governance.pages.consumption import connector_governance
from usage.models import EventSource


class ConnectorListView(PermissionRequired, ListView):
    """Search, provider filter, sort on every column, pages; usage per row from the rollups (pages/connector_list)."""

    permission_required = VIEW_CONNECTOR
    template_name = "connectors/connector_list.html"
    context_object_name = "rows"
    paginate_by = connector_list.PAGE_SIZE

    def get_queryset(self):
        self.sort, self.descending = connector_list.parse_sort(self.request.GET.get("sort"))
        return connector_list.connector_rows(
            search=self.request.GET.get("q", "")[:200],
            provider=self.request.GET.get("provider", ""),
            sort=self.sort,
            descending=self.descending,
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        connector_list.attach_last_executions(context["rows"])
        keep = {name: self.request.GET[name] for name in ("q", "provider") if self.request.GET.get(name)}
        context["columns"] = [
            {
                "key": key,
                "label": label,
                "sorted": "descending" if key == self.sort and self.descending else "ascending" if key == self.sort else "",
                "url": "?" + urlencode({**keep, "sort": f"-{key}" if key == self.sort and not self.descending else key}),
            }
            for key, label in connector_list.SORT_COLUMNS.items()
        ]
        context["keep_query"] = urlencode({**keep, "sort": ("-" if self.descending else "") + self.sort})
        context["providers"] = Provider.choices
        context["search"] = self.request.GET.get("q", "")
        context["provider"] = self.request.GET.get("provider", "")
        context["has_connectors"] = bool(context["paginator"].count) or bool(keep)
        return context


@require(DELETE_CONNECTOR)
@require_POST
def bulk_delete(request):
    """Two steps on one URL: the list's selection shows a confirmation page; its form (confirm=1) deletes."""
    ids = request.POST.getlist("ids")[:1000]
    # Preconfigured connectors are not in the database, so they can never be selected here.
    connectors = list(in_space().filter(pk__in=ids).order_by("name"))  # never another space's
    if not connectors:
        messages.error(request, "Select the connectors to delete first.")
        return redirect("connectors:list")
    if request.POST.get("confirm") != "1":
        return render(request, "connectors/connector_confirm_bulk_delete.html", {"connectors": connectors})
    names = ", ".join(f"“{c.name}”" for c in connectors)
    Connector.objects.filter(pk__in=[c.pk for c in connectors]).delete()
    messages.success(request, f"Deleted {len(connectors)} connector{'s' if len(connectors) > 1 else ''}: {names}.")
    return redirect("connectors:list")


class ConnectorObjectMixin:
    """Finds the connector of the URL, preconfigured or stored; 404 when there is none."""

    def get_object(self, queryset=None):
        return get_connector_or_404(self.request, self.kwargs["connector_id"], self.permission_required)


class StoredConnectorMixin(ConnectorObjectMixin):
    """For edit and delete: preconfigured connectors are read-only, so send the user back with a message."""

    def dispatch(self, request, *args, **kwargs):
        connector = self.get_object()
        if connector.is_preconfigured:
            messages.error(request, f"“{connector.name}” is preconfigured in ACTIONS_CONFIG and cannot be changed here.")
            return HttpResponseRedirect(reverse("connectors:detail", args=[connector.pk]))
        return super().dispatch(request, *args, **kwargs)


class ReportOutcomeMixin:
    """After a successful create, edit or delete, says so on the next page: "Connector “<name>” <outcome>."."""

    outcome = ""

    def form_valid(self, form):
        response = super().form_valid(form)
        # After a delete self.object is the deleted instance, name included.
        messages.success(self.request, f"Connector “{self.object.name}” {self.outcome}.")
        return response


class ConnectorFormPageMixin:
    """What the create and edit pages add to the form: each provider's URL (a value, or for Azure a placeholder
    with parts to fill in) and whether the API key is required (connector_form.js keeps both in step)."""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = context["form"]
        provider = form["provider"].value()
        context["default_urls"] = {
            "openai": validation.OPENAI_DEFAULT_URL,
            "azure": validation.AZURE_DEPLOYMENTS_URL_PATTERN,
            "other": validation.OTHER_DEFAULT_URL,
        }
        needs_key = provider in (Provider.OPENAI, Provider.AZURE) and not form.instance.has_api_key
        context["api_key_required"] = "shown" if needs_key else "hidden"
        if provider == Provider.AZURE:
            form.fields["api_url"].widget.attrs["placeholder"] = validation.AZURE_DEPLOYMENTS_URL_PATTERN
        return context


class SaveAndTestMixin:
    def get_success_url(self):
        url = reverse("connectors:detail", args=[self.object.pk])
        return url + "?test=1#test" if "save_and_test" in self.request.POST else url


class ConnectorCreateView(PermissionRequired, ConnectorFormPageMixin, ReportOutcomeMixin, SaveAndTestMixin, CreateView):
    permission_required = ADD_CONNECTOR
    form_class = ConnectorForm
    template_name = "connectors/connector_form.html"
    outcome = "created"

    def form_valid(self, form):
        form.instance.created_by = self.request.user
        form.instance.space_id = current_space_id.get()  # made in the space of the page
        return super().form_valid(form)


class ConnectorDetailView(PermissionRequired, ConnectorObjectMixin, DetailView):
    permission_required = VIEW_CONNECTOR
    template_name = "connectors/connector_detail.html"
    context_object_name = "connector"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["default_test_body"] = default_test_body(self.object)
        context["autorun_test"] = self.request.GET.get("test") == "1"
        # For the "Use it from code" card: the absolute URLs an application calls.
        execute_path = reverse("api_connector_execute", args=[self.object.pk])
        openai_base_path = reverse("openai_models", args=[self.object.pk]).removesuffix("/models")
        context["execute_url"] = self.request.build_absolute_uri(execute_path)
        context["openai_base_url"] = self.request.build_absolute_uri(openai_base_path)
        context["governance"] = connector_governance(self.request.user, self.object.pk)
        return context


class ConnectorUpdateView(
    PermissionRequired, StoredConnectorMixin, ConnectorFormPageMixin, ReportOutcomeMixin, SaveAndTestMixin, UpdateView
):
    permission_required = CHANGE_CONNECTOR
    form_class = ConnectorForm
    template_name = "connectors/connector_form.html"
    context_object_name = "connector"
    outcome = "saved"


class ConnectorDeleteView(PermissionRequired, StoredConnectorMixin, ReportOutcomeMixin, DeleteView):
    permission_required = DELETE_CONNECTOR
    template_name = "connectors/connector_confirm_delete.html"
    context_object_name = "connector"
    success_url = reverse_lazy("connectors:list")
    outcome = "deleted"



@require_POST
async def run_connector_test(request, connector_id: str):
    """The test panel's action: runs a JSON body as sub-action ``test`` and answers the envelope, with the
    duration and token usage, as JSON for the panel's script. Recorded like any execution (source ``ui_test``)."""
    user = await request.auser()
    if not user.is_authenticated:
        return _test_error(401, "Log in again: your session has ended.")
    try:
        connector = await connector_to_execute(user, connector_id, EXECUTE_CONNECTOR, source=EventSource.UI_TEST,
                                               sub_action="test", request_bytes=len(request.body))
    except PermissionDenied:
        return _test_error(403, "You may not run connectors.")
    except ConnectorNotFound:
        return _test_error(404, "No connector with that id.")
    except ConnectorUnavailable as exc:
        return JsonResponse({"status": "error", "message": str(exc), "retry": True}, status=503)
    try:
        payload = untrusted_json.loads(request.body)  # bounded: connectors/untrusted_json.py
        body = payload["body"]
    except (ValueError, KeyError, TypeError):
        # An execution attempt all the same: recorded with what the panel is told.
        await refuse_before_start(connector, MALFORMED_TEST_REQUEST, user=user, source=EventSource.UI_TEST,
                                  sub_action="test", request_bytes=len(request.body))
        return _test_error(400, MALFORMED_TEST_REQUEST)
    params = {"subAction": "test", "subActionParams": {"body": body}}
    execution = await execute(connector, params, user=user, source=EventSource.UI_TEST,
                              request_bytes=len(request.body))
    return JsonResponse(
        {
            **execution.envelope,
            "duration_ms": round(execution.duration_ms, 1),
            "usage": execution.usage or None,
        }
    )


MALFORMED_TEST_REQUEST = "Send {\"body\": \"<JSON string>\"}."


def _test_error(status: int, message: str) -> JsonResponse:
    # The panel's script shows ``message``; it cannot follow a login redirect or read an HTML error page.
    return JsonResponse({"status": "error", "message": message}, status=status)
