"""What the receiver answers, and how its hand-parsed request bodies appear in OpenAPI.

Request bodies are parsed by hand (see ``app.py``) rather than declared as parameters, so
FastAPI cannot describe them itself; the schemas below put them back into ``/docs``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from src.common.schema import Reading

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


def reading_components() -> dict[str, Any]:
    """``Reading`` and the models it uses, keyed by name, as OpenAPI components."""
    schema = Reading.model_json_schema(ref_template=COMPONENTS_REF)
    components: dict[str, Any] = dict(schema.pop("$defs", {}))
    components[Reading.__name__] = schema
    return components


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An ``openapi_extra`` that documents a required JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


READING_REF: dict[str, Any] = {"$ref": COMPONENTS_REF.format(model=Reading.__name__)}


def reading_body() -> dict[str, Any]:
    return json_body(READING_REF, "One reading.")


def batch_body(max_readings: int) -> dict[str, Any]:
    return json_body(
        {"type": "array", "items": READING_REF, "minItems": 1, "maxItems": max_readings},
        f"A JSON array of 1 to MAX_BATCH_READINGS ({max_readings}) readings; one bad reading rejects all.",
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
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
