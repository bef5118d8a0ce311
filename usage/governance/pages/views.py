"""The governance pages under /usage/: budgets and rate limits, prices and per-connector pricing, alerts.

Each page needs the governance permission of what it shows or changes (usage/governance/permissions.py), held by
the Connector admins role; budgets and rate limits of a user or an API key are changed by superusers only
(refused with 403 here, and by the forms). The figures come from consumption.py (the counters); the forms say what
is wrong with bad input. "My usage" is usage/dashboards/my_usage_views.py.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.generic import CreateView, DeleteView, UpdateView
from django.views.generic.edit import FormMixin

from connectors.access.policy import PermissionRequired, manages_people, may, require
from connectors.lookup import find
from usage import space_scope
from usage.formatting import currency
from usage.governance import permissions as perm
from usage.governance.models import (
    Alert,
    AlertChannel,
    Budget,
    ConnectorPricing,
    ErrorRateRule,
    Price,
    RateLimit,
)
from usage.governance.pages import consumption
from usage.governance.pages.forms import (
    SUPERUSER_SCOPES,
    SUPERUSERS_ONLY,
    AlertChannelForm,
    BudgetForm,
    ConnectorPricingForm,
    ErrorRateRuleForm,
    PriceForm,
    RateLimitForm,
)
from usage.ranges import known_time_zones

ALERTS_SHOWN = 200


# --- Budgets and rate limits -------------------------------------------------------------------------------------

@require(perm.VIEW_BUDGET)
def budget_list(request):
    budgets, limits = consumption.all_rules()
    return render(request, "governance/budgets.html", {
        "budgets": budgets,
        "limits": limits if may(request.user, perm.VIEW_RATE_LIMIT) else None,
    })


def _belongs_to_a_space(model) -> bool:
    return any(field.name == "space" for field in model._meta.get_fields())


class GovernanceFormMixin(PermissionRequired):
    """A create/edit/delete page: 403 (not a login redirect) for a signed-in user without the permission, the
    generic form template, and a message naming what was done."""

    template_name = "governance/form.html"
    title = ""
    outcome = ""

    def get_context_data(self, **kwargs):
        return super().get_context_data(**kwargs, title=self.get_title(), cancel_url=self.get_success_url(),
                                        time_zones=sorted(known_time_zones()))

    def get_title(self) -> str:
        return self.title

    def get_success_url(self):
        return str(self.success_url)

    def get_queryset(self):
        # Budgets, rate limits and alert rules belong to a space: another space's are not found (404). List
        # prices are the same in every space.
        queryset = super().get_queryset()
        if _belongs_to_a_space(queryset.model):
            queryset = queryset.filter(space_id=space_scope.space_id())
        elif queryset.model is Price:
            queryset = prices_of_space(queryset)
        return queryset

    def form_valid(self, form):
        if _belongs_to_a_space(type(form.instance)) and form.instance._state.adding:
            form.instance.space_id = space_scope.space_id()  # made in the page's space
        response = super().form_valid(form)
        messages.success(self.request, f"{self.object._meta.verbose_name.capitalize()} “{self.object}” {self.outcome}.")
        warning = getattr(form, "price_warning", "")
        if warning:
            messages.warning(self.request, warning)
        return response


class ScopedRuleMixin(GovernanceFormMixin):
    """Budgets and rate limits: the form knows who submits it; a user's or key's rule is for superusers only."""

    success_url = reverse_lazy("governance:budgets")

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "user": self.request.user}

    def get_initial(self):
        # "Add a budget" on a connector's page links here with ?connector=<id> (new rules only: an edit form shows
        # the rule as it is).
        connector_id = self.request.GET.get("connector")
        if connector_id and getattr(self, "object", None) is None:
            return {"scope": "connector", "connector_id": connector_id}
        return {}

    def get_object(self, queryset=None):
        rule = super().get_object(queryset)
        if rule.scope in SUPERUSER_SCOPES and not manages_people(self.request.user):
            raise PermissionDenied(SUPERUSERS_ONLY)
        return rule


class DeleteMixin(GovernanceFormMixin):
    """Named first in a delete view's bases: its confirmation is a plain form, whatever the model's form is."""

    template_name = "governance/confirm_delete.html"
    form_class = forms.Form

    def get_form_kwargs(self):
        return FormMixin.get_form_kwargs(self)

    def form_valid(self, form):
        name = f"{self.object._meta.verbose_name.capitalize()} “{self.object}”"
        response = super(GovernanceFormMixin, self).form_valid(form)
        messages.success(self.request, f"{name} deleted.")
        return response


class BudgetSaveMixin:
    """A saved budget starts from what its period has used so far, not from zero."""

    def form_valid(self, form):
        response = super().form_valid(form)
        consumption.catch_up_with_the_period(self.object)
        return response


class BudgetCreate(BudgetSaveMixin, ScopedRuleMixin, CreateView):
    permission_required = perm.ADD_BUDGET
    model, form_class, title, outcome = Budget, BudgetForm, "New budget", "created"


class BudgetEdit(BudgetSaveMixin, ScopedRuleMixin, UpdateView):
    permission_required = perm.CHANGE_BUDGET
    model, form_class, title, outcome = Budget, BudgetForm, "Edit budget", "saved"


class BudgetDelete(DeleteMixin, ScopedRuleMixin, DeleteView):
    permission_required = perm.DELETE_BUDGET
    model, title = Budget, "Delete budget"


class RateLimitCreate(ScopedRuleMixin, CreateView):
    permission_required = perm.ADD_RATE_LIMIT
    model, form_class, title, outcome = RateLimit, RateLimitForm, "New rate limit", "created"


class RateLimitEdit(ScopedRuleMixin, UpdateView):
    permission_required = perm.CHANGE_RATE_LIMIT
    model, form_class, title, outcome = RateLimit, RateLimitForm, "Edit rate limit", "saved"


class RateLimitDelete(DeleteMixin, ScopedRuleMixin, DeleteView):
    permission_required = perm.DELETE_RATE_LIMIT
    model, title = RateLimit, "Delete rate limit"


# --- Prices ------------------------------------------------------------------------------------------------------

def prices_of_space(prices):
    """``prices`` as the current space sees them: list prices are the same everywhere; a negotiated price is its
    connector's, so it shows in that connector's space only."""
    negotiated = prices.exclude(connector_id="").order_by().values_list("connector_id", flat=True).distinct()
    return prices.filter(Q(connector_id="") | Q(connector_id__in=space_scope.connector_ids(negotiated)))


def mark_versions(prices) -> list[Price]:
    """Each price (newest version first per model and scope) marked ``is_current`` (in force today) or
    ``is_future``; any other is a past version."""
    today = timezone.now().date()
    prices = list(prices)
    current: set[tuple[str, str]] = set()
    for price in prices:
        scope = (price.connector_id, price.model_pattern)
        price.is_current = scope not in current and price.valid_from <= today
        price.is_future = price.valid_from > today
        if price.is_current:
            current.add(scope)
    return prices


@require(perm.VIEW_PRICE)
def price_list(request):
    """Every price version, grouped by model pattern and scope, the version in force today marked."""
    prices = mark_versions(prices_of_space(Price.objects.all()).order_by("connector_id", "model_pattern", "-valid_from"))
    pricing = ConnectorPricing.objects.all()
    ours = space_scope.connector_ids(pricing.values_list("connector_id", flat=True))
    return render(request, "governance/prices.html", {
        "list_prices": [p for p in prices if not p.connector_id],
        "negotiated": [p for p in prices if p.connector_id],
        "pricing": pricing.filter(connector_id__in=ours).order_by("connector_id"),
        "currency": currency(),
    })


class PriceMixin(GovernanceFormMixin):
    model, form_class = Price, PriceForm

    def get_success_url(self):
        connector_id = self.request.GET.get("connector") or ""
        if connector_id and find(connector_id) is not None:
            return reverse("governance:connector_pricing", args=[connector_id])
        return reverse("governance:prices")


class PriceCreate(PriceMixin, CreateView):
    permission_required = perm.ADD_PRICE
    title, outcome = "New price (version)", "added"

    def get_initial(self):
        initial = super().get_initial()
        # "Add a version" links carry the model (and the connector for negotiated prices).
        for name, param in (("model_pattern", "model"), ("connector_id", "connector")):
            if self.request.GET.get(param):
                initial[name] = self.request.GET[param]
        return initial


class PriceEdit(PriceMixin, UpdateView):
    permission_required = perm.CHANGE_PRICE
    title, outcome = "Edit price", "saved"


class PriceDelete(DeleteMixin, PriceMixin, DeleteView):
    permission_required = perm.DELETE_PRICE
    title = "Delete price"


@require(perm.CHANGE_CONNECTOR_PRICING)
def connector_pricing(request, connector_id: str):
    """One connector's pricing: discount, Azure deployment map, and its negotiated prices."""
    connector = find(connector_id)
    if connector is None:
        raise Http404("No connector with that id.")
    pricing = ConnectorPricing.objects.filter(connector_id=connector.pk).first() or ConnectorPricing(
        connector_id=connector.pk
    )
    form = ConnectorPricingForm(request.POST or None, instance=pricing)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Pricing of “{connector.name}” saved.")
        return redirect("governance:connector_pricing", connector_id=connector.pk)
    return render(request, "governance/connector_pricing.html", {
        "connector": connector,
        "form": form,
        "negotiated": mark_versions(Price.objects.filter(connector_id=connector.pk).order_by("model_pattern",
                                                                                          "-valid_from")),
    }, status=400 if form.errors else 200)


# --- Alerts ------------------------------------------------------------------------------------------------------

@require(perm.VIEW_ALERT)
def alert_list(request):
    # An alert shows in the space of the rule that raised it (index alert_space_newest).
    alerts = (Alert.objects.filter(space_id=space_scope.space_id())
              .prefetch_related("deliveries__channel").order_by("-raised_at")[:ALERTS_SHOWN])
    user = request.user
    return render(request, "governance/alerts.html", {
        "alerts": alerts,
        "shown": ALERTS_SHOWN,
        "channels": AlertChannel.objects.filter(space_id=space_scope.space_id())
        if may(user, perm.VIEW_ALERT_CHANNEL) else None,
        "rules": ErrorRateRule.objects.filter(space_id=space_scope.space_id())
        if may(user, perm.VIEW_ERROR_RATE_RULE) else None,
    })


class AlertsMixin(GovernanceFormMixin):
    success_url = reverse_lazy("governance:alerts")


class ChannelCreate(AlertsMixin, CreateView):
    permission_required = perm.ADD_ALERT_CHANNEL
    model, form_class, title, outcome = AlertChannel, AlertChannelForm, "New alert channel", "created"


class ChannelEdit(AlertsMixin, UpdateView):
    permission_required = perm.CHANGE_ALERT_CHANNEL
    model, form_class, title, outcome = AlertChannel, AlertChannelForm, "Edit alert channel", "saved"


class ChannelDelete(DeleteMixin, AlertsMixin, DeleteView):
    permission_required = perm.DELETE_ALERT_CHANNEL
    model, title = AlertChannel, "Delete alert channel"


class ErrorRuleCreate(AlertsMixin, CreateView):
    permission_required = perm.ADD_ERROR_RATE_RULE
    model, form_class, title, outcome = ErrorRateRule, ErrorRateRuleForm, "New error-rate rule", "created"


class ErrorRuleEdit(AlertsMixin, UpdateView):
    permission_required = perm.CHANGE_ERROR_RATE_RULE
    model, form_class, title, outcome = ErrorRateRule, ErrorRateRuleForm, "Edit error-rate rule", "saved"


class ErrorRuleDelete(DeleteMixin, AlertsMixin, DeleteView):
    permission_required = perm.DELETE_ERROR_RATE_RULE
    model, title = ErrorRateRule, "Delete error-rate rule"
