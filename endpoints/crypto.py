"""Encryption of endpoint API keys at rest.

The Fernet key is derived from SECRET_KEY with HKDF-SHA256, so a database dump
alone reveals no key, and rotating SECRET_KEY makes old ciphertexts unreadable
(they must be entered again).
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

HKDF_INFO = b"promptlooper.endpoints.api_key.v1"


class DecryptionError(Exception):
    pass


@lru_cache(maxsize=4)
def fernet_for(secret_key: str) -> Fernet:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"promptlooper", info=HKDF_INFO)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(secret_key.encode())))


def encrypt(plaintext: str) -> str:
    return fernet_for(settings.SECRET_KEY).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet_for(settings.SECRET_KEY).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "The stored API key cannot be decrypted with the current SECRET_KEY; "
            "enter the key again for this endpoint."
        ) from None
