"""The OpenAPI 3 description of the JSON API, served at /api/openapi.json."""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

_ERROR = {"$ref": "#/components/schemas/Error"}
_CONNECTOR = {"$ref": "#/components/schemas/Connector"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ERROR, "Invalid request; the message names the field"),
    "401": _json(_ERROR, "No or wrong credentials"),
    "403": _json(_ERROR, "Authenticated, but without the needed permission"),
    "404": _json(_ERROR, "No such connector"),
}

_OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
# The OpenAI-compatible endpoint answers in OpenAI's error shape; (type, code) for each status it produces itself.
_OPENAI_ERRORS = {
    "400": _json(_OPENAI_ERROR, "The body is not a JSON object or has no messages: invalid_request_error (param: messages)"),
    "401": _json(_OPENAI_ERROR, "No or wrong API key: invalid_request_error, code invalid_api_key"),
    "403": _json(_OPENAI_ERROR, "Without connectors.execute_connector: permission_error, code insufficient_permissions; "
                 "the connector's host not in allowedHosts: permission_error, code host_not_allowed"),
    "404": _json(_OPENAI_ERROR, "No such connector: invalid_request_error, code connector_not_found"),
    "405": _json(_OPENAI_ERROR, "Wrong HTTP method: invalid_request_error"),
    "413": _json(_OPENAI_ERROR, "The body is larger than the server accepts: invalid_request_error"),
    "500": _json(_OPENAI_ERROR, "An unexpected failure (still recorded): api_error, code internal_error"),
    "502": _json(_OPENAI_ERROR, "The provider could not be reached or answered unreadably: api_error, code upstream_error"),
    "504": _json(_OPENAI_ERROR, "No complete answer within responseTimeout: api_error, code upstream_timeout"),
    "default": _json(_OPENAI_ERROR, "The provider's own error, passed on with its status and body (the key masked; "
                     "Azure's errors completed with type and param)"),
}

SPEC = {
    "openapi": "3.0.3",
    "info": {
        "title": "connectors-admin API",
        "version": "1.0.0",
        "description": "Kibana's connector API for the OpenAI (.gen-ai) connector type, plus an OpenAI-compatible "
        "endpoint and token usage. Authenticate with HTTP Basic, `Authorization: ApiKey <key>` or "
        "`Authorization: Bearer <key>`. Secrets are write-only: no response ever contains an API key.",
    },
    "security": [{"basic": []}, {"apiKey": []}, {"bearer": []}],
    "paths": {
        "/api/actions/connector": {
            "post": {
                "summary": "Create a connector",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateConnector"}}}},
                "responses": {"200": _json(_CONNECTOR), **_ERRORS},
            }
        },
        "/api/actions/connector/{id}": {
            "parameters": [_ID],
            "get": {"summary": "Get a connector", "responses": {"200": _json(_CONNECTOR), **_ERRORS}},
            "post": {
                "summary": "Create a connector with the given id",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateConnector"}}}},
                "responses": {"200": _json(_CONNECTOR), "409": _json(_ERROR, "The id is taken"), **_ERRORS},
            },
            "put": {
                "summary": "Update a connector (secrets optional: omitted keeps the stored key)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UpdateConnector"}}}},
                "responses": {"200": _json(_CONNECTOR), **_ERRORS},
            },
            "delete": {"summary": "Delete a connector", "responses": {"204": {"description": "Deleted"}, **_ERRORS}},
        },
        "/api/actions/connectors": {
            "get": {
                "summary": "List connectors, preconfigured ones included",
                "responses": {"200": _json({"type": "array", "items": _CONNECTOR}), "401": _ERRORS["401"], "403": _ERRORS["403"]},
            }
        },
        "/api/actions/connector_types": {
            "get": {
                "summary": "The connector types",
                "parameters": [{"name": "feature_id", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "array", "items": {"type": "object"}})},
            }
        },
        "/api/actions/connector/{id}/_execute": {
            "parameters": [_ID],
            "post": {
                "summary": "Run a sub-action: run, test, invokeAI, stream, invokeStream",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Execute"}}}},
                "responses": {
                    "200": {
                        "description": "Always 200 with Kibana's envelope for params and provider errors; "
                        "text/event-stream for streaming sub-actions",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_ERRORS,
                },
            },
        },
        "/api/openai/{id}/v1/chat/completions": {
            "parameters": [_ID],
            "post": {
                "summary": "OpenAI-compatible chat completions through the connector (streaming or not)",
                "description": "Point an OpenAI SDK at `/api/openai/<id>/v1` with an API key of the account page. "
                "The body is OpenAI's chat completion request; `model` may be omitted (the connector's default). "
                "Every call is recorded in the event log with its token usage.",
                "security": [{"bearer": []}, {"basic": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}},
                "responses": {
                    "200": {
                        "description": "The provider's chat completion, or with `stream: true` its SSE stream (a stream "
                        "that breaks ends with a `data: {\"error\": ...}` event)",
                        "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_OPENAI_ERRORS,
                },
            },
        },
        "/api/openai/{id}/v1/models": {
            "parameters": [_ID],
            "get": {
                "summary": "The connector's model, OpenAI's list shape",
                "security": [{"bearer": []}, {"basic": []}],
                "responses": {"200": _json({"$ref": "#/components/schemas/ModelList"}), **{k: _OPENAI_ERRORS[k] for k in ("401", "403", "404", "405")}},
            },
        },
        "/api/usage/connectors/{id}": {
            "parameters": [
                _ID,
                {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}},
            ],
            "get": {"summary": "Token usage of a connector over a time range", "responses": {"200": _json({"$ref": "#/components/schemas/Usage"}), **_ERRORS}},
        },
    },
    "components": {
        "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "ApiKey <key>"},
            "bearer": {"type": "http", "scheme": "bearer"},
        },
        "schemas": {
            "Config": {
                "type": "object",
                "required": ["apiProvider", "apiUrl"],
                "additionalProperties": False,
                "properties": {
                    "apiProvider": {"type": "string", "enum": ["OpenAI", "Azure OpenAI", "Other"]},
                    "apiUrl": {"type": "string"},
                    "defaultModel": {"type": "string"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "organizationId": {"type": "string", "description": "OpenAI only"},
                    "projectId": {"type": "string", "description": "OpenAI only"},
                    "contextWindowLength": {"type": "number", "description": "Stored for the applications that read it"},
                    "temperature": {"type": "number", "description": "Stored for the applications that read it"},
                    "enableNativeFunctionCalling": {"type": "boolean", "description": "Other only"},
                    "verificationMode": {"type": "string", "enum": ["full", "certificate", "none"], "description": "Other only: TLS verification; enables PKI"},
                },
            },
            "Secrets": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "apiKey": {"type": "string", "writeOnly": True},
                    "certificateData": {"type": "string", "writeOnly": True, "description": "Other only: base64 PEM client certificate"},
                    "privateKeyData": {"type": "string", "writeOnly": True, "description": "Other only: base64 PEM private key"},
                    "caData": {"type": "string", "writeOnly": True, "description": "Other only: base64 PEM CA certificate"},
                },
            },
            "CreateConnector": {
                "type": "object",
                "required": ["name", "connector_type_id", "config"],
                "properties": {
                    "name": {"type": "string"},
                    "connector_type_id": {"type": "string", "enum": [".gen-ai"]},
                    "config": {"$ref": "#/components/schemas/Config"},
                    "secrets": {"$ref": "#/components/schemas/Secrets"},
                },
            },
            "UpdateConnector": {
                "type": "object",
                "required": ["name", "config"],
                "properties": {
                    "name": {"type": "string"},
                    "config": {"$ref": "#/components/schemas/Config"},
                    "secrets": {"$ref": "#/components/schemas/Secrets"},
                },
            },
            "Connector": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "connector_type_id": {"type": "string"},
                    "config": {"$ref": "#/components/schemas/Config"},
                    "is_preconfigured": {"type": "boolean"},
                    "is_deprecated": {"type": "boolean"},
                    "is_missing_secrets": {"type": "boolean"},
                    "is_system_action": {"type": "boolean"},
                    "is_connector_type_deprecated": {"type": "boolean", "description": "Absent from create responses"},
                    "referenced_by_count": {"type": "integer"},
                },
            },
            "Execute": {
                "type": "object",
                "required": ["params"],
                "properties": {
                    "params": {
                        "type": "object",
                        "required": ["subAction"],
                        "properties": {
                            "subAction": {"type": "string", "enum": ["run", "test", "invokeAI", "stream", "invokeStream"]},
                            "subActionParams": {"type": "object"},
                        },
                    }
                },
            },
            "Envelope": {
                "type": "object",
                "required": ["status", "connector_id"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "error"]},
                    "connector_id": {"type": "string"},
                    "data": {},
                    "message": {"type": "string"},
                    "service_message": {"type": "string"},
                    "retry": {"type": "boolean", "description": "false for invalid params or config, true for any error while running"},
                    "errorSource": {"type": "string", "enum": ["user", "framework"]},
                },
            },
            "Error": {
                "type": "object",
                "properties": {"statusCode": {"type": "integer"}, "error": {"type": "string"}, "message": {"type": "string"}},
            },
            "OpenAIError": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}},
                    }
                },
            },
            "ChatCompletionRequest": {
                "type": "object",
                "required": ["messages"],
                "properties": {
                    "model": {"type": "string", "description": "Optional: the connector's default model when omitted"},
                    "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                    "stream": {"type": "boolean"},
                    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
                },
                "additionalProperties": True,
            },
            "ModelList": {
                "type": "object",
                "properties": {
                    "object": {"type": "string", "enum": ["list"]},
                    "data": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "object": {"type": "string"}, "owned_by": {"type": "string"}}}},
                },
            },
            "Usage": {"type": "object", "properties": {"connector_id": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"}, "totals": {"type": "object"}, "series": {"type": "array", "items": {"type": "object"}}, "by_user": {"type": "array", "items": {"type": "object"}}, "by_model": {"type": "array", "items": {"type": "object"}}}},
        },
    },
}


@require_GET
def openapi_json(request):
    return JsonResponse(SPEC)
