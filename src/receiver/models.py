"""What the receiver answers, and how the ingest endpoints appear in OpenAPI.

The ingest endpoints are served outside FastAPI (see ``ingest.py``), so FastAPI cannot
describe them itself; the operations below put them into ``/docs`` and
``docs/api-spec.yaml`` as FastAPI would have.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, Field

from src.common.schema import Reading
from src.receiver.auth import API_KEY_HEADER

COMPONENTS_REF = "#/components/schemas/{model}"


class Accepted(BaseModel):
    """Every reading of the request is in SQS."""

    status: Literal["accepted"] = "accepted"
    accepted: int = Field(description="Readings queued by this request")


class ErrorMessage(BaseModel):
    """A failure that is not about a field of the body (auth, size, queue)."""

    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description='Where: "body", then the index in a batch, then the field path')
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """FastAPI's usual 422 shape, produced by hand because bodies are parsed by hand."""

    detail: list[ValidationIssue]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    queue: str
    approximate_messages: int | None = None
    reason: str | None = None


ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "Missing or wrong X-API-Key"},
    413: {"model": ErrorMessage, "description": "Body larger than the endpoint's limit"},
    422: {
        "model": ValidationProblem,
        "description": "Invalid reading(s); `loc` names the field, and the index within a batch",
    },
    503: {
        "model": ErrorMessage,
        "description": "Queue unavailable; nothing is guaranteed queued, retry (see Retry-After)",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}},
    },
}

SECURITY_SCHEME = "APIKeyHeader"


def ingest_components() -> dict[str, Any]:
    """The models the ingest operations reference (and the models they use), as OpenAPI components."""
    components: dict[str, Any] = {}
    for model in (Accepted, ErrorMessage, ValidationProblem, Reading):
        schema = model.model_json_schema(ref_template=COMPONENTS_REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


def security_schemes() -> dict[str, Any]:
    return {
        SECURITY_SCHEME: {
            "type": "apiKey",
            "description": "One of the keys in API_KEY",
            "in": "header",
            "name": API_KEY_HEADER,
        }
    }


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": COMPONENTS_REF.format(model=model.__name__)}


def _json_content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A required JSON request body."""
    return {"description": description, "content": {"application/json": {"schema": schema}}, "required": True}


def _ingest_operation(summary: str, operation_id: str, body: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {"202": {"description": "Successful Response", "content": _json_content(Accepted)}}
    for status, answer in ERROR_RESPONSES.items():
        responses[str(status)] = {
            "description": answer["description"],
            **({"headers": copy.deepcopy(answer["headers"])} if "headers" in answer else {}),
            "content": _json_content(answer["model"]),
        }
    return {
        "post": {
            "summary": summary,
            "operationId": operation_id,
            "requestBody": body,
            "responses": responses,
            "security": [{SECURITY_SCHEME: []}],
        }
    }


def ingest_operations(max_readings: int) -> dict[str, Any]:
    """The OpenAPI path items of ``POST /ingest`` and ``POST /ingest/batch``."""
    batch = {"type": "array", "items": _ref(Reading), "minItems": 1, "maxItems": max_readings}
    return {
        "/ingest": _ingest_operation(
            "Queue one reading", "ingest_ingest_post", json_body(_ref(Reading), "One reading.")
        ),
        "/ingest/batch": _ingest_operation(
            "Queue a JSON array of readings, all or none",
            "ingest_batch_ingest_batch_post",
            json_body(
                batch,
                f"A JSON array of 1 to MAX_BATCH_READINGS ({max_readings}) readings; one bad reading rejects all.",
            ),
        ),
    }
