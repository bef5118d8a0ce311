"""Filters on raw execution events, read from the query string: one definition for the Logs tab and events.csv.

Query parameters (kept in every link of the Logs tab, so that a filtered view can be shared as a URL):

- ``outcome``: ``success`` or ``failure``;
- ``sub_action``: one of ``SUB_ACTIONS``;
- ``user``: the user name recorded with the event;
- ``model``: the model the provider reported, or the requested one when it reported none (as the rollups key it);
- ``q``: words searched in the error message (case-insensitive substring);
- ``api_key``: an API key's id: the calls made with it (what a dashboard's row of that key links to).

A user who may not see everyone's usage (no ``usage.view_usage_dashboard``) is limited to their own calls: the
views pass ``only_user_id`` and the ``user`` parameter is then ignored.
"""

from dataclasses import dataclass, replace
from urllib.parse import urlencode

from django.db.models import QuerySet

from connectors.query_params import InvalidQueryParam, text_param
from usage.models import Outcome, model_is

# Kibana's sub-actions of the .gen-ai connector (docs/KIBANA.md), the only values recorded in sub_action.
SUB_ACTIONS = ("run", "test", "invokeAI", "stream", "invokeStream")
MAX_SEARCH_LENGTH = 200
MAX_NAME_LENGTH = 255


class InvalidFilter(ValueError):
    """A filter value that cannot be used; the message names the parameter and is safe to show."""


@dataclass(frozen=True)
class EventFilters:
    outcome: str = ""
    sub_action: str = ""
    user: str = ""
    model: str = ""
    q: str = ""
    api_key: int | None = None
    only_user_id: int | None = None

    @classmethod
    def from_params(cls, params, *, only_user_id: int | None = None) -> "EventFilters":
        outcome = (params.get("outcome") or "").strip()
        if outcome and outcome not in Outcome.values:
            raise InvalidFilter(f"[outcome]: {outcome[:32]!r} is not an outcome; use success or failure.")
        sub_action = (params.get("sub_action") or "").strip()
        if sub_action and sub_action not in SUB_ACTIONS:
            raise InvalidFilter(f"[sub_action]: {sub_action[:32]!r} is not a sub-action; use one of {', '.join(SUB_ACTIONS)}.")
        try:
            user = "" if only_user_id is not None else text_param(params, "user", max_length=MAX_NAME_LENGTH)
            model = text_param(params, "model", max_length=MAX_NAME_LENGTH)
            q = text_param(params, "q", max_length=MAX_SEARCH_LENGTH)
        except InvalidQueryParam as exc:
            raise InvalidFilter(str(exc)) from None
        raw_key = (params.get("api_key") or "").strip()
        if raw_key and not (raw_key.isascii() and raw_key.isdigit() and len(raw_key) <= 18):
            raise InvalidFilter(f"[api_key]: {raw_key[:32]!r} is not an API key's id (a whole number).")
        return cls(outcome=outcome, sub_action=sub_action, user=user, model=model, q=q,
                   api_key=int(raw_key) if raw_key else None, only_user_id=only_user_id)

    @property
    def is_active(self) -> bool:
        return any((self.outcome, self.sub_action, self.user, self.model, self.q)) or self.api_key is not None

    @property
    def rollups_can_count(self) -> bool:
        """Whether the rollups (keyed by connector, space, hour, model, user, API key and outcome) can count these
        events."""
        return not (self.sub_action or self.q or self.only_user_id is not None)

    def without_outcome(self) -> "EventFilters":
        return replace(self, outcome="")

    def apply(self, events: QuerySet) -> QuerySet:
        if self.only_user_id is not None:
            events = events.filter(user_id=self.only_user_id)
        if self.api_key is not None:
            events = events.filter(api_key_id=self.api_key)
        if self.outcome:
            events = events.filter(outcome=self.outcome)
        if self.sub_action:
            events = events.filter(sub_action=self.sub_action)
        if self.user:
            events = events.filter(user_name=self.user)
        if self.model:
            events = events.filter(model_is(self.model))
        if self.q:
            # A substring scan of the rows the other conditions and the range leave (see docs/PERFORMANCE.md,
            # "Logs tab"); error messages are short and only failures have one. "Not empty" changes no result and
            # lets PostgreSQL use the partial trigram index the README offers operators.
            events = events.filter(error_message__icontains=self.q).exclude(error_message="")
        return events

    def query_params(self) -> dict[str, str]:
        names = ("outcome", "sub_action", "user", "model", "q")
        params = {name: getattr(self, name) for name in names if getattr(self, name)}
        if self.api_key is not None:
            params["api_key"] = str(self.api_key)
        return params

    def querystring(self) -> str:
        return urlencode(self.query_params())
