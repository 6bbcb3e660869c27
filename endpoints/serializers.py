import re

from rest_framework import serializers

from endpoints.models import Endpoint
from engine.adapters import ADAPTERS

# RFC 9110 token characters: anything else in a header name is refused by servers, or worse.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class EndpointSerializer(serializers.ModelSerializer):
    """The key is write-only: responses say `has_api_key`, never the key, not even encrypted.
    Leaving `api_key` out of an update keeps the key; `""` clears it."""

    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=1000,
        style={"input_type": "password"},
    )
    has_api_key = serializers.BooleanField(read_only=True)
    adapter = serializers.ChoiceField(choices=sorted(ADAPTERS), default="openai")
    base_url = serializers.URLField(max_length=500, help_text="e.g. http://127.0.0.1:11434/v1")
    timeout_s = serializers.FloatField(min_value=0.1, max_value=3600, default=60.0)
    max_concurrency = serializers.IntegerField(min_value=0, max_value=10_000, default=0)
    extra_headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=4000), required=False
    )

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "name",
            "base_url",
            "adapter",
            "api_key",
            "has_api_key",
            "default_model",
            "embedding_model",
            "timeout_s",
            "max_concurrency",
            "extra_headers",
            "created_at",
            "updated_at",
        ]

    def validate_base_url(self, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError(
                "Use an http:// or https:// URL, e.g. http://127.0.0.1:11434/v1."
            )
        return value

    def validate_extra_headers(self, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not HEADER_NAME.match(name):
                raise serializers.ValidationError(f"'{name}' is not a valid HTTP header name.")
            if "\r" in header or "\n" in header:
                raise serializers.ValidationError(f"Header '{name}' has a line break in its value.")
        return value

    def create(self, validated_data: dict) -> Endpoint:
        api_key = validated_data.pop("api_key", "")
        endpoint = Endpoint(**validated_data)
        endpoint.set_api_key(api_key)
        endpoint.save()
        return endpoint

    def update(self, instance: Endpoint, validated_data: dict) -> Endpoint:
        if "api_key" in validated_data:
            instance.set_api_key(validated_data.pop("api_key"))
        for name, value in validated_data.items():
            setattr(instance, name, value)
        instance.save()
        return instance


class ConnectionReportSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    models = serializers.ListField(child=serializers.CharField())
    latency_ms = serializers.FloatField()
    error = serializers.CharField(allow_null=True)
