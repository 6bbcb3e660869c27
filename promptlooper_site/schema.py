"""The OpenAPI schema documents every status the API answers with, not only success."""

from typing import Any

ERROR = {
    "type": "object",
    "description": '{"detail": "..."}, or {"<field>": ["what is wrong", ...]} for a request that does not validate.',
    "additionalProperties": {},
}
ALWAYS = {
    "401": "Not logged in: send a token (Authorization: Token ...) or a session.",
    "403": "Logged in, but not allowed.",
    "404": "No such object (or page).",
    "429": "Too many requests (API_THROTTLE_USER); retry after the Retry-After header.",
}
WITH_INPUT = {"400": "The request does not validate; the body names each field and what is wrong."}


def add_error_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: the error statuses of every operation,
    in the media types its successful answer comes in."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                add_errors(operation, method)
    return result


def add_errors(operation: dict, method: str) -> None:
    responses = operation["responses"]
    takes_input = bool(operation.get("parameters")) or "requestBody" in operation or method != "get"
    media_types = next(
        (list(r["content"]) for r in responses.values() if r.get("content")), ["application/json"]
    )
    content = {media_type: {"schema": {"$ref": "#/components/schemas/Error"}} for media_type in media_types}
    for status, description in {**ALWAYS, **(WITH_INPUT if takes_input else {})}.items():
        responses.setdefault(status, {"description": description, "content": content})
