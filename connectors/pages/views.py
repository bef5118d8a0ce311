"""The connector pages: list, create, details (with the test panel), edit, delete, and the test panel's action.

Each view needs one capability (connectors/permissions.py): anonymous users are sent to the login page, others
without it get 403. A URL's id becomes a connector through connectors.lookup (404 when there is none).
"""


from django.contrib import messages
from django.contrib.auth.mixins import PermissionRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_POST
from django.views.generic import CreateView, DeleteView, DetailView, ListView, UpdateView

from connectors import untrusted_json
from connectors.lookup import ConnectorNotFound, all_connectors, get_connector_or_404
from connectors.outbound.execution import ConnectorUnavailable, connector_to_execute, execute
from connectors.outbound.providers import default_test_body
from connectors.outbound.record import ExecutionRecord
from connectors.pages.forms import ConnectorForm
from connectors.permissions import (
    ADD_CONNECTOR,
    CHANGE_CONNECTOR,
    DELETE_CONNECTOR,
    EXECUTE_CONNECTOR,
    VIEW_CONNECTOR,
)
from usage.governance.consumption import connector_governance
from usage.models import EventSource


class ConnectorListView(PermissionRequiredMixin, ListView):
    permission_required = VIEW_CONNECTOR
    template_name = "connectors/connector_list.html"
    context_object_name = "connectors"

    def get_queryset(self):
        return all_connectors()


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


class SaveAndTestMixin:
    def get_success_url(self):
        url = reverse("connectors:detail", args=[self.object.pk])
        return url + "?test=1#test" if "save_and_test" in self.request.POST else url


class ConnectorCreateView(PermissionRequiredMixin, ReportOutcomeMixin, SaveAndTestMixin, CreateView):
    permission_required = ADD_CONNECTOR
    form_class = ConnectorForm
    template_name = "connectors/connector_form.html"
    outcome = "created"

    def form_valid(self, form):
        form.instance.created_by = self.request.user
        return super().form_valid(form)


class ConnectorDetailView(PermissionRequiredMixin, ConnectorObjectMixin, DetailView):
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
    PermissionRequiredMixin, StoredConnectorMixin, ReportOutcomeMixin, SaveAndTestMixin, UpdateView
):
    permission_required = CHANGE_CONNECTOR
    form_class = ConnectorForm
    template_name = "connectors/connector_form.html"
    context_object_name = "connector"
    outcome = "saved"


class ConnectorDeleteView(PermissionRequiredMixin, StoredConnectorMixin, ReportOutcomeMixin, DeleteView):
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
        record = ExecutionRecord(connector, user=user, source=EventSource.UI_TEST, sub_action="test",
                                 request_bytes=len(request.body))
        await record.rejected(MALFORMED_TEST_REQUEST)
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
