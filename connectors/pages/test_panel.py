"""The test tab of the connector page: runs a body as sub-action ``test`` for a logged-in user."""

import json

from django.http import JsonResponse
from django.views.decorators.http import require_POST

from connectors.models import Connector
from connectors.outbound.execution import execute
from usage.models import Source


@require_POST
async def test_connector(request, connector_id: str):
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"status": "error", "message": "Log in again: your session has ended."}, status=401)
    if not await user.ahas_perm("connectors.execute_connector"):
        return JsonResponse({"status": "error", "message": "You may not run connectors."}, status=403)
    connector = await Connector.objects.afind(connector_id)
    if connector is None:
        return JsonResponse({"status": "error", "message": "No connector with that id."}, status=404)
    try:
        payload = json.loads(request.body)
        body = payload["body"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"status": "error", "message": "Send {\"body\": \"<JSON string>\"}."}, status=400)
    params = {"subAction": "test", "subActionParams": {"body": body}}
    execution = await execute(connector, params, user=user, source=Source.UI_TEST, request_bytes=len(request.body))
    return JsonResponse(
        {
            **execution.envelope,
            "duration_ms": round(execution.duration_ms, 1),
            "usage": execution.usage or None,
        }
    )



