"""The admin API described as OpenAPI 3.1, served at /api/openapi.json.

tests/integration/test_console_api.py checks it against the routes the app serves and
validates real answers of every operation against the schemas here, so it cannot drift.
"""

from __future__ import annotations

from typing import Any

NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
STRING_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}
INTEGER_OR_NULL: dict[str, Any] = {"type": ["integer", "null"]}
TRACE = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "trace id"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
    }


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


BAR = _object({"name": {"type": "string"}, "score": {"type": "number"},
               "weight": {"type": "number"}, "width": {"type": "integer"},
               "band": {"enum": ["low", "mid", "high"]}})  # fmt: skip
RECORD = _object(
    {
        "trace": {"type": "string"}, "when": {"type": "string"}, "message_id": STRING_OR_NULL,
        "sender": STRING_OR_NULL, "recipient": STRING_OR_NULL, "kind": STRING_OR_NULL,
        "reason": {"type": "string"}, "payment": {"type": "string"}, "composite": NUMBER_OR_NULL,
        "tier": STRING_OR_NULL, "gate": STRING_OR_NULL, "reasons": _array({"type": "string"}),
        "remediation": {"type": "string"}, "bars": _array(BAR),
        "unparseable": {"type": "string", "description": "why the entry is no router's "
                        "record; empty for records routers wrote"},
    },
    {"offset": {"type": "integer"}, "review": {"type": "string"},
     "evidence_requested": {"anyOf": [{"type": "null"}, _object(
         {"at": {"type": "string"}, "reviewer": STRING_OR_NULL, "why": {"type": "string"},
          "request_id": STRING_OR_NULL})]}},
)  # fmt: skip
FEED_ROW = _object({
    "t": INTEGER_OR_NULL, "when": {"type": "string"}, "trace": STRING_OR_NULL,
    "from": STRING_OR_NULL, "to": STRING_OR_NULL, "kind": STRING_OR_NULL,
    "action": STRING_OR_NULL, "tier": STRING_OR_NULL, "composite": NUMBER_OR_NULL,
    "reason": {"type": "string"},
})  # fmt: skip
PEER_ROW = _object({
    "did": {"type": "string"}, "composite": NUMBER_OR_NULL, "tier": STRING_OR_NULL,
    "action": STRING_OR_NULL, "last_seen": INTEGER_OR_NULL, "when": {"type": "string"},
    "messages": {"type": "integer"}, "provisioned": {"type": "boolean"},
})  # fmt: skip
STANDING = _object({
    "did": {"type": "string"}, "composite": {"type": "number"}, "tier": {"type": "string"},
    "dimensions": {"type": "object", "additionalProperties": {"type": "number"}},
    "reasons": {"type": "object", "additionalProperties": _array({"type": "string"})},
    "weakest": {"type": "string"}, "remediation": {"type": "string"},
    "policy_version": {"type": "integer"}, "action": {"type": "string"},
    "action_reason": {"type": "string"},
})  # fmt: skip
REVIEW = _object(
    {"trace_id": TRACE, "action": {"type": "string"}, "reviewer": {"type": "string"}},
    {"why": {"type": "string"}, "state": {"type": "string"}, "at": {"type": "integer"},
     "message_id": STRING_OR_NULL, "sender": STRING_OR_NULL, "recipient": STRING_OR_NULL,
     "penalised": STRING_OR_NULL, "delivered": {"type": "boolean"},
     "request_id": {"type": "string"}},
)  # fmt: skip
ERROR = _object({"error": {"type": "string"}, "status": {"type": "integer"}})

SCHEMAS = {
    "Error": ERROR,
    "Record": RECORD,
    "FeedRow": FEED_ROW,
    "PeerRow": PEER_ROW,
    "Standing": STANDING,
    "Review": REVIEW,
    "WhoAmI": _object({"name": {"type": "string"},
                       "role": {"enum": ["viewer", "security", "ops"]}}),
    "Decisions": _object({"decisions": _array(_ref("FeedRow")), "now_ms": {"type": "integer"}}),
    "Blocked": _object({"records": _array(_ref("Record")), "filter": {"type": "object"}}),
    "Escalations": _object({"escalations": _array(_ref("Record"))}),
    "Peers": _object({"peers": _array(_ref("PeerRow")), "total": {"type": "integer"},
                      "search": {"type": "string"}, "sort": {"type": "string"},
                      "decisions_read": {"type": "integer"}}),
    "Peer": _object({"peer": _ref("Standing"), "evidence": {"type": "object"},
                     "history": {"type": ["object", "null"]},
                     "weights": {"type": "object"}}),
    "Policy": _object({"policy": {"type": "object"}, "version": {"type": "integer"},
                       "history": _array(_object({"version": {"type": "integer"},
                                                  "who": {"type": "string"},
                                                  "why": {"type": "string"},
                                                  "when": {"type": "string"}}))}),
    "PolicyChange": _object({"path": {"type": "string", "example": "thresholds.probation"},
                             "value": {"description": "JSON value or its text", "example": 0.55},
                             "why": {"type": "string", "minLength": 1}}),
    "PolicyApplied": _object({"version": {"type": "integer"}, "changes": _array(_array({}))}),
    "WhatIf": _object({"replayed": {"type": "integer"}, "unchanged": {"type": "integer"},
                       "newly_blocked": {"type": "integer"},
                       "newly_delivered": {"type": "integer"},
                       "newly_escalated": {"type": "integer"},
                       "by_sender": {"type": "object"}, "by_reason": {"type": "object"},
                       "policy_changes": _array(_array({})),
                       "proposal": {"type": "string"}}),
    "ReviewRequest": _object(
        {"why": {"type": "string", "minLength": 1, "maxLength": 1000,
                 "description": "kept on record (not needed for rescore)"}},
        {"penalise": {"type": "boolean", "description": "confirm: count a sender failure"}},
    ),
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


def _path(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}  # fmt: skip


def _answers(schema: str, *errors: int) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": _ref(schema)}}}
    }
    for status in (401, 403, *errors):
        answers[str(status)] = {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return answers


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    400: "refused: the request is malformed, or the change or review is not allowed",
    401: "no valid credentials (send Authorization: Bearer TOKEN)",
    403: "the caller's role may not do this (or, for a browser session, no CSRF token)",
    404: "no such record, or no such review action",
    409: "already decided by someone else, or in conflict with its state",
    503: "RabbitMQ or Redis is not answering; nothing was changed",
}
LIMIT = _query("limit", "how many to return (1-1000)", {"type": "integer"})

PATHS: dict[str, Any] = {
    "/api/openapi.json": {"get": {"summary": "This description", "operationId": "openapi",
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    "/api/whoami": {"get": {"summary": "The caller's name and role", "operationId": "whoami",
                            "responses": _answers("WhoAmI")}},
    "/api/decisions": {"get": {
        "summary": "Newest decisions first", "operationId": "decisions",
        "parameters": [_query("after", "only those received after this Unix ms",
                              {"type": "integer"}), LIMIT],
        "responses": _answers("Decisions", 400, 503)}},
    "/api/blocked": {"get": {
        "summary": "Blocked records, newest first", "operationId": "blocked",
        "parameters": [_query("sender", "sender DID"), _query("recipient", "recipient DID"),
                       _query("reason", "reason code"),
                       _query("hours", "the last N hours (default 24; 0: all)",
                              {"type": "integer"}), LIMIT],
        "responses": _answers("Blocked", 400, 503)}},
    "/api/escalations": {"get": {
        "summary": "Escalations waiting for a human, with evidence requests",
        "operationId": "escalations", "responses": _answers("Escalations", 503)}},
    "/api/peers": {"get": {
        "summary": "Known peers with their latest score", "operationId": "peers",
        "parameters": [_query("q", "part of a DID"),
                       _query("sort", "sort order",
                              {"enum": ["composite", "tier", "last_seen", "did"]}), LIMIT],
        "responses": _answers("Peers", 400, 503)}},
    "/api/peers/{did}": {"get": {
        "summary": "One peer: dimensions now, evidence, pacts, score history",
        "operationId": "peer", "parameters": [_path("did", "the peer's did:key",
                                                    {"type": "string"})],
        "responses": _answers("Peer", 400, 503)}},
    "/api/policy": {
        "get": {"summary": "The policy in force and its history", "operationId": "policy",
                "responses": _answers("Policy", 503)},
        "post": {"summary": "Put one changed value in force (ops)", "operationId": "setPolicy",
                 "requestBody": _body("PolicyChange"),
                 "responses": _answers("PolicyApplied", 400, 503)}},
    "/api/policy/what-if": {"get": {
        "summary": "Replay recent decisions under one change; nothing is applied",
        "operationId": "whatIf",
        "parameters": [_query("set", "PATH=VALUE, e.g. thresholds.probation=0.55"), LIMIT],
        "responses": _answers("WhatIf", 400, 503)}},
    "/api/{queue}/{trace}/{action}": {"post": {
        "summary": "Review: release or confirm a block; approve, reject, rescore or ask for "
        "evidence on an escalation (security)", "operationId": "review",
        "parameters": [
            _path("queue", "blocked or escalations", {"enum": ["blocked", "escalations"]}),
            _path("trace", "the record's trace id", TRACE),
            _path("action", "blocked: release, confirm; escalations: approve, reject, "
                  "rescore, request-evidence",
                  {"enum": ["release", "confirm", "approve", "reject", "rescore",
                            "request-evidence"]})],
        "requestBody": _body("ReviewRequest"),
        "responses": _answers("Review", 400, 404, 409, 503)}},
}  # fmt: skip

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "trust-broker admin API",
        "version": "1",
        "description": "The console's data and actions as JSON. Send `Authorization: Bearer "
        "TOKEN` (tokens come from `trust-broker console add-user`). Roles: viewer reads, "
        "security reviews, ops changes policy. Every error is {error, status}.",
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
}
