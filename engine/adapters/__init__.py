"""LLM adapters, registered by name; importing this package registers the built-ins."""

from engine.adapters.base import (
    ADAPTERS,
    BaseAdapter,
    ConnectionReport,
    adapter_class,
    create_adapter,
    register_adapter,
)
from engine.adapters.openai_compat import OpenAICompatAdapter, normalise_base_url

try:  # embeddings on the CPU need onnxruntime, an optional install
    from engine.adapters import local_minilm  # noqa: F401
except ImportError:
    pass

__all__ = [
    "ADAPTERS",
    "BaseAdapter",
    "ConnectionReport",
    "OpenAICompatAdapter",
    "adapter_class",
    "create_adapter",
    "normalise_base_url",
    "register_adapter",
]
