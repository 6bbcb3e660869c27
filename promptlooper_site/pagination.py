"""Pages of API lists, where `page` is what the schema says it is: a whole number from 1."""

from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    def get_page_number(self, request: Any, paginator: Any) -> Any:
        # DRF takes `?page=` (blank) as page 1; the schema documents an integer.
        value = request.query_params.get(self.page_query_param)
        if value is not None and not (value.isdigit() and int(value) >= 1):
            raise NotFound("Invalid page: give a whole number from 1.")
        return super().get_page_number(request, paginator)
