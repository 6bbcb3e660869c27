from django import forms
from django.contrib import admin

from endpoints.models import Endpoint


class EndpointAdminForm(forms.ModelForm):
    # Write-only: the stored key is never rendered back into the page.
    api_key = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = Endpoint
        exclude = ["api_key_encrypted"]

    def save(self, commit: bool = True) -> Endpoint:
        endpoint = super().save(commit=False)
        endpoint.change_api_key(
            self.cleaned_data.get("api_key", ""), self.cleaned_data.get("clear_api_key", False)
        )
        if commit:
            endpoint.save()
        return endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointAdminForm
    list_display = [
        "name",
        "base_url",
        "adapter",
        "default_model",
        "max_concurrency",
        "key_set",
        "updated_at",
    ]
    list_filter = ["adapter"]
    search_fields = ["name", "base_url", "default_model"]
    readonly_fields = ["key_set", "created_at", "updated_at"]

    @admin.display(boolean=True, description="API key set")
    def key_set(self, obj: Endpoint) -> bool:
        return obj.has_api_key
