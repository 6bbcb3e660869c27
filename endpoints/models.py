import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from endpoints import crypto
from engine.adapters import ConnectionReport, create_adapter
from engine.params import extra_name_problem
from engine.types import EndpointConfig, EngineError

# A button waits for the connection test: never as long as a slow generation may take.
TEST_TIMEOUT_S = 15.0


def url_origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port spelled out: what a key is bound to."""
    parts = urlsplit(url or "")
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # a port out of range: not the same place as any other
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def validate_extra_params(names: object) -> None:
    problem = extra_name_problem(names)
    if problem:
        raise ValidationError(f"Extra parameters: {problem}.")


class Endpoint(models.Model):
    """An OpenAI-compatible server (Ollama, vLLM, llama.cpp, OpenWebUI, OpenAI)."""

    PROJECT_PATH = "project"

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="endpoints")
    name = models.CharField(max_length=100)
    base_url = models.URLField(max_length=500, help_text="e.g. http://127.0.0.1:11434/v1")
    adapter = models.CharField(max_length=50, default="openai")
    # Fernet ciphertext; the plaintext key is never stored. Use set_api_key().
    api_key_encrypted = models.TextField(blank=True, default="", editable=False)
    default_model = models.CharField(max_length=200, blank=True)
    embedding_model = models.CharField(max_length=200, blank=True)
    timeout_s = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    max_concurrency = models.PositiveIntegerField(
        default=0, help_text="Calls this server serves at once; 0 = no limit of its own."
    )
    # Parameters the server takes beyond OpenAI's (vLLM, llama.cpp, Ollama: top_k, min_p, ...);
    # an experiment may set only these and OpenAI's (engine/params.py has their ranges).
    extra_params = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_extra_params],
        help_text="Names of parameters the server accepts beyond OpenAI's, e.g. top_k, min_p.",
    )
    # Fernet ciphertext of a JSON object: header values may carry keys too. Use set_extra_headers().
    extra_headers_encrypted = models.TextField(blank=True, default="", editable=False)
    # The names alone, readable without the key: what the API and the pages show.
    extra_header_names = models.JSONField(default=list, blank=True, editable=False)
    # Prices per million tokens in settings.CURRENCY. None: not priced, the calls cost 0, as
    # on a server of one's own (the bundled local model's endpoint has none). A proxy on
    # localhost may still relay a paid API, so the host alone does not make calls free.
    price_in = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Per million input tokens."
    )
    price_out = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Per million output tokens."
    )
    # {"model": [input price, output price]}: models priced apart from the endpoint's prices.
    model_prices = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="endpoint_name_unique_per_project")
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # never let a key reach a log through repr
        return f"<Endpoint {self.pk}: {self.name} {self.base_url}>"

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)

    def set_api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = crypto.encrypt(plaintext) if plaintext else ""

    def change_api_key(self, new_key: str = "", clear: bool = False) -> None:
        """What a form's write-only key field means: blank keeps the stored key."""
        if clear:
            self.set_api_key("")
        elif new_key:
            self.set_api_key(new_key)

    def get_api_key(self) -> str:
        """The plaintext key; crypto.DecryptionError (naming this endpoint) if SECRET_KEY changed."""
        return self._decrypt(self.api_key_encrypted, "key") if self.api_key_encrypted else ""

    def set_extra_headers(self, headers: dict[str, str]) -> None:
        headers = dict(headers or {})
        self.extra_headers_encrypted = crypto.encrypt(json.dumps(headers)) if headers else ""
        self.extra_header_names = sorted(headers)

    def get_extra_headers(self) -> dict[str, str]:
        if not self.extra_headers_encrypted:
            return {}
        return json.loads(self._decrypt(self.extra_headers_encrypted, "extra headers"))

    def _decrypt(self, ciphertext: str, what: str) -> str:
        try:
            return crypto.decrypt(ciphertext)
        except crypto.DecryptionError:
            field = "api_key" if what == "key" else "extra_headers"
            raise crypto.DecryptionError(
                f"The {what} of endpoint '{self.name}' cannot be decrypted with this SECRET_KEY; "
                f"enter {'it' if what == 'key' else 'them'} again (Endpoints → Edit, or PATCH {field})."
            ) from None

    def prices(self, model: str = "") -> tuple[float, float]:
        """(input, output) per million tokens of `model` (the default model when blank)."""
        own = self.model_prices.get(model or self.default_model) if self.model_prices else None
        if own:
            return float(own[0]), float(own[1])
        return self.price_in or 0.0, self.price_out or 0.0

    def engine_config(self, with_key: bool = True) -> EndpointConfig:
        """The endpoint as the engine calls it (runs/bridge.py translates every other row);
        `with_key=False` for planning and previews: the key is not even decrypted."""
        return EndpointConfig(
            name=self.name,
            base_url=self.base_url,
            api_key=self.get_api_key() if with_key else "",
            default_model=self.default_model,
            embedding_model=self.embedding_model,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            extra_headers=self.get_extra_headers() if with_key else {},
            adapter=self.adapter,
            extra_params=tuple(self.extra_params or ()),
            cache_namespace=self.project.effective_cache_namespace(),
            http_transport=settings.LLM_HTTP_TRANSPORT,
        )

    def cost(self, tokens_in: int, tokens_out: int, model: str = "") -> float:
        price_in, price_out = self.prices(model)
        return (tokens_in * price_in + tokens_out * price_out) / 1_000_000

    @property
    def dearest_price(self) -> float:
        """The highest price per million tokens of any model: bounds a sweep's cost."""
        prices = [self.price_in or 0.0, self.price_out or 0.0]
        prices += [float(p) for pair in (self.model_prices or {}).values() for p in pair]
        return max(prices)

    def move_to(self, base_url: str) -> bool:
        """Point the endpoint at `base_url`. Secrets stay bound to where they were
        entered: a new scheme, host or port forgets the stored key and headers
        (returns True then), so nobody can send them to a server of their choosing."""
        moved = bool(self.pk) and url_origin(base_url) != url_origin(self.base_url)
        self.base_url = base_url
        if moved:
            self.set_api_key("")
            self.set_extra_headers({})
        return moved

    def connection_problems(self) -> dict[str, str]:
        """Why no request can be made with what is stored, by field: a key or headers
        that no longer decrypt, or a key or header value that cannot go into an HTTP header."""
        problems: dict[str, str] = {}
        try:
            key = self.get_api_key()
            problem = header_value_problem(key)
            if problem:
                problems["api_key"] = f"The stored API key {problem}; enter it again."
        except crypto.DecryptionError as exc:
            problems["api_key"] = str(exc)
        try:
            for name, value in self.get_extra_headers().items():
                problem = header_value_problem(str(name)) or header_value_problem(str(value))
                if problem:
                    problems["extra_headers"] = f"Header '{name}' {problem}."
        except crypto.DecryptionError as exc:
            problems["extra_headers"] = str(exc)
        return problems

    def test_connection(self) -> dict[str, Any]:
        """Ask the endpoint for its models: a ConnectionReport plus `problems`, by field,
        when what is stored cannot make a request at all (then nothing is sent).
        A failure is a report, never an exception."""
        problems = self.connection_problems()
        if problems:
            error = " ".join(problems.values())
            return {
                "ok": False,
                "status": None,
                "models": [],
                "latency_ms": 0.0,
                "error": error,
                "problems": problems,
            }
        config = self.engine_config()
        config.timeout_s = min(config.timeout_s, TEST_TIMEOUT_S)

        async def probe() -> ConnectionReport:
            async with create_adapter(config) as adapter:
                return await adapter.test_connection()

        try:
            # Sync views run outside any event loop (WSGI, or ASGI's worker thread).
            report = asyncio.run(probe())
        except EngineError as exc:  # e.g. an adapter that is no longer installed
            report = ConnectionReport(ok=False, status=None, models=[], latency_ms=0.0, error=str(exc))
        return {**report, "problems": {}}

    test_connection.__test__ = False  # not a pytest test, whatever its name


def header_value_problem(value: str) -> str | None:
    """What keeps `value` out of an HTTP header (visible ASCII, spaces and tabs only), or None."""
    if not value.isascii():
        return "has a character outside ASCII, which HTTP headers cannot carry"
    if any(ch != "\t" and not 32 <= ord(ch) < 127 for ch in value):
        return "has a control character (such as a line break), which HTTP headers cannot carry"
    return None
