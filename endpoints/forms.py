import re

from django import forms
from django.conf import settings

from endpoints.models import Endpoint
from endpoints.serializers import EndpointSerializer
from engine.adapters import ADAPTERS


class ApiKeyForm(forms.ModelForm):
    """An endpoint form (the UI's, the admin's) whose API key is write-only: never
    rendered back, blank keeps the stored one."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave blank to keep the current key.",
    )
    clear_api_key = forms.BooleanField(label="Clear the stored key", required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The form writes base_url onto the instance while validating: remember where
        # the stored secrets were entered, so a move to another host forgets them.
        self.stored_base_url = self.instance.base_url

    def save(self, commit: bool = True) -> Endpoint:
        endpoint = super().save(commit=False)
        new_url, endpoint.base_url = endpoint.base_url, self.stored_base_url
        had_secrets = endpoint.has_api_key or bool(endpoint.extra_header_names)
        # What the page tells the user: a move to another host forgot the stored secrets.
        self.forgot_secrets = endpoint.move_to(new_url) and had_secrets
        endpoint.change_api_key(
            self.cleaned_data.get("api_key", ""), self.cleaned_data.get("clear_api_key", False)
        )
        if commit:
            endpoint.save()
        return endpoint


class EndpointForm(ApiKeyForm):
    model_prices = forms.CharField(
        label="Prices of other models",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "code"}),
        help_text="One model a line: its name, then its input and output prices per million tokens, "
        "e.g. gpt-4o-mini 0.15 0.60. Other models use the prices above.",
    )
    extra_params = forms.CharField(
        label="Extra parameters",
        required=False,
        help_text="Parameters the server accepts beyond OpenAI's, separated by commas or spaces, "
        "e.g. top_k, min_p, repeat_penalty (vLLM, llama.cpp, Ollama). Experiments on this endpoint "
        "may set these; any other unknown name is refused.",
    )
    extra_headers = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "code", "autocomplete": "off"}),
        help_text='A JSON object, e.g. {"X-Org": "research"}. Stored encrypted and never shown '
        "again: leave blank to keep the stored headers, {} to remove them.",
    )

    class Meta:
        model = Endpoint
        fields = [
            "name",
            "base_url",
            "adapter",
            "default_model",
            "embedding_model",
            "timeout_s",
            "max_concurrency",
            "price_in",
            "price_out",
        ]
        labels = {
            "base_url": "Base URL",
            "timeout_s": "Timeout (seconds)",
            "price_in": "Price per million input tokens",
            "price_out": "Price per million output tokens",
        }

    def __init__(self, *args, project=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project or self.instance.project
        if self.instance.extra_header_names:
            names = ", ".join(self.instance.extra_header_names)
            self.fields["extra_headers"].help_text += f" Stored now: {names}."
        self.fields["adapter"] = forms.ChoiceField(
            choices=[(name, name) for name in sorted(ADAPTERS)],
            initial="openai",
            help_text="'openai' speaks the OpenAI chat API (Ollama, vLLM, llama.cpp, OpenWebUI, OpenAI).",
        )
        if self.instance.pk is None:
            del self.fields["clear_api_key"]
        prices = self.instance.model_prices or {}
        # Sorted: PostgreSQL's jsonb keeps its own key order, not the order entered.
        self.initial["extra_params"] = ", ".join(self.instance.extra_params or [])
        self.initial["model_prices"] = "\n".join(f"{m} {p[0]:g} {p[1]:g}" for m, p in sorted(prices.items()))
        unpriced = "blank: not priced (calls cost 0, as on a server of your own)"
        for name in ("price_in", "price_out"):
            self.fields[name].help_text = f"In {settings.CURRENCY}; {unpriced}."

    def clean_model_prices(self) -> dict[str, list[float]]:
        prices = {}
        for number, line in enumerate(self.cleaned_data.get("model_prices", "").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                values = [float(p) for p in parts[1:]]
            except ValueError:
                values = []
            if len(parts) != 3 or len(values) != 2 or min(values) < 0:
                raise forms.ValidationError(
                    f"Line {number}: write the model, then its input and output prices, e.g. gpt-4o-mini 0.15 0.60."
                )
            prices[parts[0]] = values
        return prices

    def clean_extra_params(self) -> list[str]:
        text = self.cleaned_data.get("extra_params", "")
        return [name for name in re.split(r"[\s,]+", text) if name]  # the serializer checks the names

    def clean_extra_headers(self) -> dict | None:
        headers = self.cleaned_data.get("extra_headers")
        if headers is None:  # blank: keep the stored headers
            return None
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise forms.ValidationError('Give the headers as a JSON object of strings, e.g. {"X-Org": "a"}.')
        return headers

    def save(self, commit: bool = True) -> Endpoint:
        endpoint = super().save(commit=False)
        endpoint.project = self.project
        if self.cleaned_data.get("extra_headers") is not None:
            endpoint.set_extra_headers(self.cleaned_data["extra_headers"])
        endpoint.model_prices = self.cleaned_data.get("model_prices", {})
        endpoint.extra_params = list(dict.fromkeys(self.cleaned_data.get("extra_params", [])))
        if commit:
            endpoint.save()
        return endpoint

    def clean(self) -> dict:
        """The API's rules too (URL scheme, header names, limits): the same endpoint
        is refused, with the same words, whichever way it comes in."""
        data = super().clean()
        if self.errors:
            return data
        fields = [f for f in EndpointSerializer.Meta.fields if f in data and data[f] is not None]
        payload = {f: data[f] for f in fields if f != "api_key" or data[f]}
        instance = self.instance if self.instance.pk else None
        if instance is None:
            payload["project"] = self.project.pk
        context = {"project": self.project}  # the page has checked the role already
        serializer = EndpointSerializer(instance, data=payload, partial=instance is not None, context=context)
        if not serializer.is_valid():
            for field, messages in serializer.errors.items():
                self.add_error(field if field in self.fields else None, [str(m) for m in messages])
        return data
