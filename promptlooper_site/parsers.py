"""The API's JSON parser: every body that is not JSON we accept is a 400, never a 500."""

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:  # DRF turns ValueError into a 400, but not this
            raise ParseError("JSON parse error - nested too deeply; flatten the request body.") from None
