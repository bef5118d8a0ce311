"""The Spaces page, for superusers: create, edit and delete spaces, and grant roles in them to users and groups."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from connectors.access.policy import manages_spaces
from connectors.access.roles import all_roles
from connectors.space_management import SpaceNotDeletable, delete_space
from connectors.spaces.models import Space, SpaceRoleGrant

SUPERUSERS_ONLY = "Only superusers manage spaces."


class SpaceForm(forms.ModelForm):
    class Meta:
        model = Space
        fields = ["id", "name", "description", "color", "initials"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.instance._state.adding:
            self.fields["id"].disabled = True  # part of every URL inside the space: never changed


class GrantForm(forms.Form):
    role = forms.ChoiceField()
    principal = forms.CharField(label="User or group", max_length=150,
                                help_text="A username, or group:<name> for every member of a group.")
    everywhere = forms.BooleanField(label="In every space", required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(name, name) for name in all_roles()]

    def clean_principal(self) -> dict:
        value = self.cleaned_data["principal"].strip()
        if value.startswith("group:"):
            group = Group.objects.filter(name=value.removeprefix("group:").strip()).first()
            if group is None:
                raise forms.ValidationError("No group with that name.")
            return {"group": group}
        user = get_user_model().objects.filter(username=value).first()
        if user is None:
            raise forms.ValidationError("No user with that username.")
        return {"user": user}


def superusers_only(view):
    @login_required
    def checked(request, *args, **kwargs):
        if not manages_spaces(request.user):
            raise PermissionDenied(SUPERUSERS_ONLY)
        return view(request, *args, **kwargs)

    checked.__name__ = view.__name__
    return checked


def _page(request, form=None, status=200):
    spaces = Space.objects.annotate(connector_count=Count("connectors")).order_by("name")
    grants = SpaceRoleGrant.objects.select_related("space", "role", "user", "group").order_by("space__name", "role__name")
    return render(request, "spaces/space_list.html", {
        "spaces": spaces, "form": form or SpaceForm(), "grants": grants, "grant_form": GrantForm(),
    }, status=status)


@superusers_only
def space_list(request):
    if request.method == "POST":
        form = SpaceForm(request.POST)
        if not form.is_valid():
            return _page(request, form, status=400)
        space = form.save()
        messages.success(request, f"Space “{space.name}” created. Its pages are under /s/{space.id}/.")
        return redirect("spaces")
    return _page(request)


@superusers_only
def space_edit(request, space_id: str):
    space = get_object_or_404(Space, pk=space_id)
    form = SpaceForm(request.POST or None, instance=space)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Space “{space.name}” saved.")
        return redirect("spaces")
    return render(request, "spaces/space_form.html", {"form": form, "space": space},
                  status=400 if request.method == "POST" else 200)


@superusers_only
@require_POST
def space_delete(request, space_id: str):
    space = get_object_or_404(Space, pk=space_id)
    try:
        delete_space(space)
    except SpaceNotDeletable as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Space “{space.name}” deleted. Its events and audit records stay.")
    return redirect("spaces")


@superusers_only
@require_POST
def space_grant(request, space_id: str):
    space = get_object_or_404(Space, pk=space_id)
    form = GrantForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items()))
        return redirect("spaces")
    role = Group.objects.get(name=form.cleaned_data["role"])
    where = None if form.cleaned_data["everywhere"] else space
    SpaceRoleGrant.objects.get_or_create(space=where, role=role, **form.cleaned_data["principal"])
    messages.success(request, f"Granted {role.name} {'in every space' if where is None else f'in {space.name}'}.")
    return redirect("spaces")


@superusers_only
@require_POST
def grant_remove(request, grant_id: int):
    grant = get_object_or_404(SpaceRoleGrant, pk=grant_id)
    grant.delete()
    messages.success(request, f"Removed: {grant}.")
    return redirect("spaces")
