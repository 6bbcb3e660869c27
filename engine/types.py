"""Plain data the engine works on. Nothing here imports Django.

The apps translate ORM rows to and from these classes in one module
(`runs/bridge.py`); everything under `engine/` takes and returns only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Messages = list[dict[str, str]]


class SweepState:
    """A sweep's status: the one vocabulary of the database (runs.models.SweepStatus),
    the Redis flag every worker reads between calls, and the orchestrator."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"
    BUDGET_EXHAUSTED = "budget_exhausted"

    ACTIVE = (PENDING, RUNNING, PAUSED, STOPPING)
    FINISHED = (STOPPED, COMPLETED, FAILED, BUDGET_EXHAUSTED)
    # An orchestrator that reads one of these stops starting calls: a pause hands its
    # runs back, anything else cancels them.
    HALTING = (PAUSED, STOPPING, STOPPED, FAILED, BUDGET_EXHAUSTED)


class EngineError(Exception):
    """An error a user can act on; `permanent` errors are not retried."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class AdapterError(EngineError):
    """An LLM call failed; the message names the endpoint, status and body excerpt."""

    def __init__(
        self, message: str, permanent: bool = False, status: int | None = None, public: str | None = None
    ):
        super().__init__(message, permanent=permanent)
        self.status = status
        # The message without any response body (see ConnectionReport).
        self.public = message if public is None else public


class RateLimited(AdapterError):
    """One rate-limited answer (429, 503) that the caller waits out and retries
    (engine/concurrency.py); `exhausted` is the error to fail with when it stops."""

    def __init__(self, subject: str, detail: str, public: str, status: int, retry_after: float | None):
        super().__init__(f"{subject}: {detail}", status=status, public=public)
        self.subject, self.detail, self.retry_after = subject, detail, retry_after

    def exhausted(self, attempts: int, why: str, hint: str) -> AdapterError:
        tail = f"; {why} [{attempts} attempts]. {hint}"
        return AdapterError(
            f"{self.subject}: {self.detail}{tail}", status=self.status, public=f"{self.public}{tail}"
        )


class TemplateError(EngineError):
    """A stage template failed to parse or render."""


class ScorerError(EngineError):
    """A scorer could not produce a score (bad config, or e.g. a judge that gave no rating)."""


@dataclass
class EndpointConfig:
    name: str
    base_url: str
    api_key: str = ""
    default_model: str = ""
    embedding_model: str = ""
    timeout_s: float = 60.0
    max_concurrency: int = 0  # 0 = no limit of the endpoint's own
    extra_headers: dict[str, str] = field(default_factory=dict)
    adapter: str = "openai"
    # Parameters the server takes beyond OpenAI's (vLLM's top_k, ...): see engine/params.py.
    extra_params: tuple[str, ...] = ()
    # Part of every cache key of calls through this endpoint: answers cached under one
    # namespace never answer another (one per project; "" = shared).
    cache_namespace: str = ""
    # The adapter's HTTP client: "lean" (engine/adapters/transport.py) or "httpx"'s own;
    # both honour HTTP_PROXY, HTTPS_PROXY and NO_PROXY (the LLM_HTTP_TRANSPORT setting).
    http_transport: str = "lean"


@dataclass
class AdapterResponse:
    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    model: str
    finish_reason: str | None = None
    usage_estimated: bool = False  # True when the server sent no usage block
    raw: dict[str, Any] | None = None  # the provider's response, kept beside the parsed one


@dataclass
class Stage:
    name: str
    user: str
    system: str = ""
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Item:
    """One dataset row: template variables and the reference answer."""

    id: int | None
    input: dict[str, Any]
    reference: str = ""
    position: int = 0


@dataclass
class ScorerSpec:
    type: str
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # defaults to type; two scorers of one type need distinct names

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.type


@dataclass
class ScoreContext:
    """What a scorer may look at besides the input and the final output."""

    reference: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the run's resolved parameters
    stage_outputs: dict[str, str] = field(default_factory=dict)
    endpoint: EndpointConfig | None = None  # the run's endpoint
    endpoints: dict[str, EndpointConfig] = field(default_factory=dict)  # all, by name (judges)
    item_id: int | None = None
    human_scores: list[float] = field(default_factory=list)  # source=human ratings, in [0, 1]
    llm: Any = None  # an LLMClient, for scorers that call a model (judge, embeddings)


@dataclass
class ScoreOutcome:
    value: float | None  # in [0, 1]; None = nothing to score yet (no human rating)
    details: dict[str, Any] = field(default_factory=dict)
    tokens_in: int = 0  # tokens a scorer spent (LLM judge), counted in the budget
    tokens_out: int = 0
    spread: float | None = None  # std of the ratings when a judge was asked several times


@dataclass
class CallResult:
    """One LLM call as the runner saw it: through the cache or to the server."""

    response: AdapterResponse
    config_hash: str
    cached: bool


class LLMClient(Protocol):
    """What the runner and the token-spending scorers call: every completion goes
    through the response cache (engine/gateway.py implements it)."""

    async def complete(
        self,
        endpoint: EndpointConfig,
        messages: Messages,
        model: str,
        params: dict[str, Any],
        sample_index: int = 0,
    ) -> CallResult: ...

    async def embed(
        self, endpoint: EndpointConfig | None, texts: list[str], model: str = ""
    ) -> list[list[float]]: ...
