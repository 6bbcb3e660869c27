from django.contrib import admin

from endpoints.forms import ApiKeyForm
from endpoints.models import Endpoint


class EndpointAdminForm(ApiKeyForm):
    class Meta:
        model = Endpoint
        exclude = ["api_key_encrypted"]


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointAdminForm
    list_display = [
        "name",
        "project",
        "base_url",
        "adapter",
        "default_model",
        "max_concurrency",
        "key_set",
        "updated_at",
    ]
    list_filter = ["project", "adapter"]
    search_fields = ["name", "base_url", "default_model"]
    readonly_fields = ["key_set", "extra_header_names", "created_at", "updated_at"]

    @admin.display(boolean=True, description="API key set")
    def key_set(self, obj: Endpoint) -> bool:
        return obj.has_api_key
