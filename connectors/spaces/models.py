"""A space and the roles held in it.

A role is one of the registered roles (a Group, connectors/access/roles.py). Belonging to a role's Group, as
before spaces existed, holds the role in every space; a ``SpaceRoleGrant`` holds it in one space (or, with no
space, in all of them) for a user or for every member of a group (an IdP's team group, say).
"""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from connectors.spaces.current import DEFAULT_SPACE_ID

# Kibana's rule for a space id (x-pack spaces plugin, lib/space_schema.ts) and its message.
SPACE_ID_PATTERN = re.compile(r"^[a-z0-9_\-]+$")
SPACE_ID_MESSAGE = "must be lower case, a-z, 0-9, '_', and '-' are allowed"
COLOR_PATTERN = re.compile(r"^#[a-zA-Z0-9]{6}$")
COLOR_MESSAGE = "must be a 6 digit hex color, starting with a #"
MAX_INITIALS = 2
# The avatar colours a space gets when none is chosen (picked by its name, so the same name keeps its colour).
AVATAR_PALETTE = ("#54B399", "#6092C0", "#D36086", "#9170B8", "#CA8EAE", "#D6BF57", "#B9A888", "#DA8B45",
                  "#AA6556", "#E7664C")


def default_initials(name: str) -> str:
    """Kibana's rule: the first letters of the first two words, or the first two letters of a single word."""
    words = [word for word in re.split(r"\s+", name.strip()) if word]
    if not words:
        return "?"
    if len(words) == 1:
        return words[0][:MAX_INITIALS].upper()
    return (words[0][0] + words[1][0]).upper()


def default_color(name: str) -> str:
    return AVATAR_PALETTE[sum(map(ord, name)) % len(AVATAR_PALETTE)]


class Space(models.Model):
    id = models.CharField(
        primary_key=True, max_length=64,
        validators=[RegexValidator(SPACE_ID_PATTERN, SPACE_ID_MESSAGE)],
        help_text="Part of the URL inside the space (/s/marketing/ for the id marketing): lower case letters, digits, '_' and '-'.",
    )
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    color = models.CharField(max_length=7, blank=True, validators=[RegexValidator(COLOR_PATTERN, COLOR_MESSAGE)],
                             help_text="The avatar's colour, #rrggbb; from the name when empty.")
    initials = models.CharField(max_length=MAX_INITIALS, blank=True,
                                help_text="One or two characters for the avatar; from the name when empty.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_reserved(self) -> bool:
        """The default space always exists (Kibana's ``_reserved``)."""
        return self.id == DEFAULT_SPACE_ID

    @property
    def avatar_initials(self) -> str:
        return self.initials or default_initials(self.name)

    @property
    def avatar_color(self) -> str:
        return self.color or default_color(self.name)

    def clean(self) -> None:
        self.name = (self.name or "").strip()
        if not self.name:
            raise ValidationError({"name": "A space needs a name."})


class SpaceRoleGrant(models.Model):
    """A role held in one space (or in all, with no space) by a user or by every member of a group."""

    space = models.ForeignKey(Space, null=True, blank=True, on_delete=models.CASCADE, related_name="grants",
                              help_text="Empty: every space.")
    role = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="space_grants_of_role")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="space_grants")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE,
                              related_name="space_grants", help_text="Every member of this group holds the role.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False, group__isnull=True)
                           | models.Q(user__isnull=True, group__isnull=False)),
                name="space_grant_one_principal",
            ),
            # One row per (space, role, principal) among the non-null spaces; grants are made with get_or_create.
            models.UniqueConstraint(fields=["space", "role", "user", "group"], name="space_grant_unique")
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        where = f"space {self.space_id}" if self.space_id else "all spaces"
        return f"{who}: {self.role} in {where}"
