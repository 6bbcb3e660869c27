import re

from rest_framework import serializers

from endpoints.models import Endpoint, header_value_problem
from engine.adapters import ADAPTERS
from engine.params import extra_name_problem
from projects.models import Role
from projects.serializers import ProjectOwnedSerializer

# RFC 9110 token characters: anything else in a header name is refused by servers, or worse.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class EndpointSerializer(ProjectOwnedSerializer):
    """The key and the extra headers are write-only: responses say `has_api_key` and
    `extra_header_names`, never a secret, not even encrypted. Leaving `api_key` out
    of an update keeps the key; `""` clears it. A new scheme, host or port in
    `base_url` clears the stored key and headers unless the same request sets them."""

    create_role = Role.ADMIN

    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=1000,
        style={"input_type": "password"},
    )
    has_api_key = serializers.BooleanField(read_only=True)
    # Not trimmed: the schema's maxLength holds for the name as sent.
    name = serializers.CharField(max_length=100, trim_whitespace=False)
    adapter = serializers.ChoiceField(choices=sorted(ADAPTERS), default="openai")
    base_url = serializers.URLField(max_length=500, help_text="e.g. http://127.0.0.1:11434/v1")
    timeout_s = serializers.FloatField(min_value=0.1, max_value=3600, default=60.0)
    max_concurrency = serializers.IntegerField(min_value=0, max_value=10_000, default=0)
    extra_headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=4000, trim_whitespace=False),
        required=False,
        write_only=True,
        help_text="Sent with every call; stored encrypted, never returned (see extra_header_names).",
    )
    extra_header_names = serializers.ListField(child=serializers.CharField(), read_only=True)
    extra_params = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        help_text="Parameters the server accepts beyond OpenAI's (vLLM, llama.cpp, Ollama), e.g. "
        '["top_k", "min_p"]: experiments on this endpoint may set them.',
    )
    price_in = serializers.FloatField(
        min_value=0, required=False, allow_null=True, help_text="Per million input tokens, in CURRENCY."
    )
    price_out = serializers.FloatField(
        min_value=0, required=False, allow_null=True, help_text="Per million output tokens, in CURRENCY."
    )
    model_prices = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField(min_value=0), min_length=2, max_length=2),
        required=False,
        help_text='Models priced apart: {"model": [input, output]} per million tokens.',
    )

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "project",
            "name",
            "base_url",
            "adapter",
            "api_key",
            "has_api_key",
            "default_model",
            "embedding_model",
            "timeout_s",
            "max_concurrency",
            "price_in",
            "price_out",
            "model_prices",
            "extra_headers",
            "extra_header_names",
            "extra_params",
            "created_at",
            "updated_at",
        ]
        validators = []  # the name is unique per project: checked in validate()

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        project, name = self.target_project(attrs), attrs.get("name")
        if project is not None and name is not None:
            taken = Endpoint.objects.filter(project=project, name=name)
            if self.instance is not None:
                taken = taken.exclude(pk=self.instance.pk)
            if taken.exists():
                raise serializers.ValidationError(
                    {"name": [f"The project already has an endpoint '{name}'."]}
                )
        return attrs

    def validate_base_url(self, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError(
                "Use an http:// or https:// URL, e.g. http://127.0.0.1:11434/v1."
            )
        return value

    def validate_api_key(self, value: str) -> str:
        problem = header_value_problem(value)
        if problem:
            raise serializers.ValidationError(f"The API key {problem}; it is sent as an HTTP header.")
        return value

    def validate_extra_params(self, value: list[str]) -> list[str]:
        problem = extra_name_problem(value)
        if problem:
            raise serializers.ValidationError(problem[0].upper() + problem[1:] + ".")
        return list(dict.fromkeys(value))  # a name listed twice once

    def validate_extra_headers(self, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not HEADER_NAME.match(name):
                raise serializers.ValidationError(f"'{name}' is not a valid HTTP header name.")
            problem = header_value_problem(header)
            if problem:
                raise serializers.ValidationError(f"Header '{name}' {problem}.")
        return value

    def create(self, validated_data: dict) -> Endpoint:
        api_key = validated_data.pop("api_key", "")
        headers = validated_data.pop("extra_headers", {})
        endpoint = Endpoint(**validated_data)
        endpoint.set_api_key(api_key)
        endpoint.set_extra_headers(headers)
        endpoint.save()
        return endpoint

    def update(self, instance: Endpoint, validated_data: dict) -> Endpoint:
        if "base_url" in validated_data:
            instance.move_to(validated_data.pop("base_url"))
        if "api_key" in validated_data:
            instance.set_api_key(validated_data.pop("api_key"))
        if "extra_headers" in validated_data:
            instance.set_extra_headers(validated_data.pop("extra_headers"))
        for name, value in validated_data.items():
            setattr(instance, name, value)
        instance.save()
        return instance


class ConnectionReportSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    status = serializers.IntegerField(allow_null=True, help_text="The HTTP status of a refusal.")
    models = serializers.ListField(child=serializers.CharField())
    latency_ms = serializers.FloatField()
    error = serializers.CharField(allow_null=True)
