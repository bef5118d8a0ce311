from django.contrib import messages
from django.contrib.auth.mixins import PermissionRequiredMixin
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse, reverse_lazy
from django.views.generic import CreateView, DeleteView, DetailView, ListView, UpdateView

from connectors.models import Connector
from connectors.outbound.providers import default_test_body
from connectors.pages.forms import ConnectorForm


class ConnectorListView(PermissionRequiredMixin, ListView):
    permission_required = "connectors.view_connector"
    template_name = "connectors/connector_list.html"
    context_object_name = "connectors"

    def get_queryset(self):
        return Connector.objects.with_preconfigured()


class ConnectorObjectMixin:
    """Finds the connector of the URL, preconfigured or stored; 404 when there is none."""

    def get_object(self, queryset=None):
        connector = Connector.objects.find(self.kwargs["connector_id"])
        if connector is None:
            raise Http404("No connector with that id.")
        return connector


class StoredConnectorMixin(ConnectorObjectMixin):
    """For edit and delete: preconfigured connectors are read-only, so send the user back with a message."""

    def dispatch(self, request, *args, **kwargs):
        connector = self.get_object()
        if connector.is_preconfigured:
            messages.error(request, f"“{connector.name}” is preconfigured in ACTIONS_CONFIG and cannot be changed here.")
            return HttpResponseRedirect(reverse("connectors:detail", args=[connector.pk]))
        return super().dispatch(request, *args, **kwargs)


class SaveAndTestMixin:
    def get_success_url(self):
        url = reverse("connectors:detail", args=[self.object.pk])
        return url + "?test=1#test" if "save_and_test" in self.request.POST else url


class ConnectorCreateView(PermissionRequiredMixin, SaveAndTestMixin, CreateView):
    permission_required = "connectors.add_connector"
    form_class = ConnectorForm
    template_name = "connectors/connector_form.html"

    def form_valid(self, form):
        form.instance.created_by = self.request.user
        response = super().form_valid(form)
        messages.success(self.request, f"Connector “{self.object.name}” created.")
        return response


class ConnectorDetailView(PermissionRequiredMixin, ConnectorObjectMixin, DetailView):
    permission_required = "connectors.view_connector"
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
        return context


class ConnectorUpdateView(PermissionRequiredMixin, StoredConnectorMixin, SaveAndTestMixin, UpdateView):
    permission_required = "connectors.change_connector"
    form_class = ConnectorForm
    template_name = "connectors/connector_form.html"
    context_object_name = "connector"

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, f"Connector “{self.object.name}” saved.")
        return response


class ConnectorDeleteView(PermissionRequiredMixin, StoredConnectorMixin, DeleteView):
    permission_required = "connectors.delete_connector"
    template_name = "connectors/connector_confirm_delete.html"
    context_object_name = "connector"
    success_url = reverse_lazy("connectors:list")

    def form_valid(self, form):
        name = self.object.name
        response = super().form_valid(form)
        messages.success(self.request, f"Connector “{name}” deleted.")
        return response

