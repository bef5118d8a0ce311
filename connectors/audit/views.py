from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from connectors.access.policy import may_everywhere, require
from connectors.audit import exports, queries
from connectors.audit.display import readable_changes
from connectors.audit.models import ACTIONS, OBJECT_TYPES
from connectors.audit.permissions import VIEW_AUDIT_TRAIL
from connectors.spaces.current import current_space_id


def _in_readable_spaces(request, query: queries.AuditQuery) -> queries.AuditQuery:
    """An Auditor of every space reads every record; an Auditor of one space, that space's records."""
    if not may_everywhere(request.user, VIEW_AUDIT_TRAIL):
        query.space_id = current_space_id.get()
    return query


def _bad_request(request, problem: str):
    return render(request, "audit/bad_request.html", {"problem": problem}, status=400)


@require_GET
@require(VIEW_AUDIT_TRAIL)
def audit_list(request):
    try:
        query = _in_readable_spaces(request, queries.parse_query(request.GET))
        records, next_cursor = queries.page(query, request.GET.get("cursor", "").strip())
    except queries.BadFilter as exc:
        return _bad_request(request, str(exc))
    params = query.as_params()
    return render(request, "audit/audit_list.html", {
        "records": readable_changes(records),
        "query": query,
        "filter_params": urlencode(params),
        "next_url": f"?{urlencode({**params, 'cursor': next_cursor})}" if next_cursor else "",
        "actions": ACTIONS,
        "object_types": OBJECT_TYPES,
    })


@require_GET
@require(VIEW_AUDIT_TRAIL)
def audit_export(request, fmt: str):
    try:
        records = queries.filtered(_in_readable_spaces(request, queries.parse_query(request.GET)))
    except queries.BadFilter as exc:
        return _bad_request(request, str(exc))
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    asgi = isinstance(request, ASGIRequest)  # the iterator must match the server (see exports.py)
    if fmt == "csv":
        lines = exports.acsv_lines(records) if asgi else exports.csv_lines(records)
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    else:
        chunks = exports.ajson_chunks(records) if asgi else exports.json_chunks(records)
        response = StreamingHttpResponse(chunks, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response
