from django.core.validators import MinValueValidator
from django.db import models

from endpoints import crypto


class Endpoint(models.Model):
    """An OpenAI-compatible server (Ollama, vLLM, llama.cpp, OpenWebUI, OpenAI)."""

    name = models.CharField(max_length=100, unique=True)
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
    extra_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

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
        return crypto.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""
