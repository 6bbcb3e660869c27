"""Signing, the private-address guard, and one HTTP attempt. No ORM here.

Receivers check a delivery with `verify_signature(secret, raw_body, header)`,
where header is the request's X-PromptLooper-Signature.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

USER_AGENT = "PromptLooper-Webhooks/1.0"
MAX_ATTEMPTS = 3
EXCERPT_CHARS = 500
ALLOWED_SCHEMES = ("http", "https")
BODY_KEYS = ("event", "id", "experiment_id", "sweep_id", "run_id", "data", "ts")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- signing -------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The X-PromptLooper-Signature value for `body`: sha256=<hex HMAC-SHA256>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    # compare_digest on bytes: constant time, and no TypeError on a non-ASCII header.
    return hmac.compare_digest(sign(secret, body).encode(), (header or "").encode())


def encode_body(payload: dict[str, Any]) -> bytes:
    ordered = {key: payload.get(key) for key in BODY_KEYS}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(secret: str, body: bytes, *, event: str, delivery_id: Any) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-PromptLooper-Event": event,
        "X-PromptLooper-Delivery": str(delivery_id),
        "X-PromptLooper-Signature": sign(secret, body),
    }


# -- where a webhook may point -------------------------------------------------


class DestinationRefused(Exception):
    """The URL points somewhere webhooks may not go; retrying will not help."""


def refusal_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public destination ("loopback", "private", ...), or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    checks = [
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ]
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return reason
    return None if ip.is_global else "non-public"  # e.g. 100.64.0.0/10, shared (CGNAT) space


def literal_address(host: str) -> IPAddress | None:
    """The address a host name spells literally, including forms like 0x7f.1 or 2130706433."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def refused_message(host: str, ip: IPAddress | str, reason: str) -> str:
    where = f"{host} is" if str(ip) == host else f"{host} resolves to {ip},"
    return (
        f"{where} a {reason} address; webhooks to private networks are refused. "
        "Point the webhook at a public address, or set WEBHOOK_ALLOW_PRIVATE=true "
        "if this server only serves people you trust."
    )


def url_problem(url: str, allow_private: bool) -> str | None:
    """What is wrong with `url` as written (no DNS lookups), or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        return f"Not a valid URL ({exc})."
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return f"Use an http:// or https:// URL (got {parts.scheme or 'no'} scheme)."
    if not host:
        return "The URL has no host name."
    host = host.rstrip(".")  # "localhost." is localhost
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return refused_message(host, host, "loopback")
    ip = literal_address(host)
    reason = refusal_reason(ip) if ip else None
    return refused_message(host, ip, reason) if ip and reason else None


def resolve_destination(url: str, allow_private: bool) -> list[IPAddress]:
    """Every address the URL's host resolves to; raises DestinationRefused if any is refused.

    socket.gaierror means the name did not resolve: worth a retry.
    """
    problem = url_problem(url, allow_private)
    if problem:
        raise DestinationRefused(problem)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for ip in addresses if not allow_private else ():
        reason = refusal_reason(ip)
        if reason:
            raise DestinationRefused(refused_message(parts.hostname, ip, reason))
    return addresses


# -- one attempt ---------------------------------------------------------------


@dataclass
class Attempt:
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    excerpt: str = ""
    error: str = ""
    permanent: bool = False  # retrying cannot help (refused destination)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def log_entry(self) -> dict[str, Any]:
        return {
            "at": self.started_at.isoformat(),
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


def backoff_s(retry: int, jitter: float) -> float:
    """Seconds to wait before retry number `retry` (0, 1, ...); jitter in [0, 1) adds up to 10%."""
    base = settings.WEBHOOK_RETRY_BASE_S * 2**retry
    return base * (1 + 0.1 * jitter)


def lease_s() -> float:
    """How long a sender may hold a delivery before another may take it over: one
    attempt at its timeout (connect + write + read, generously); retries claim it anew."""
    return 4 * settings.WEBHOOK_TIMEOUT_S + 60


def attempt_delivery(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    started_at, start = datetime.now(UTC), time.monotonic()
    attempt = Attempt(started_at=started_at, duration_ms=0)
    try:
        addresses = resolve_destination(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
        response_status, excerpt = _post(url, addresses, body, headers)
    except DestinationRefused as exc:
        attempt.error, attempt.permanent = str(exc), True
    except socket.gaierror as exc:
        attempt.error = (
            f"Could not resolve {urlsplit(url).hostname} ({exc}). Check the webhook's URL and DNS."
        )
    except httpx.TimeoutException:
        attempt.error = (
            f"No answer within {settings.WEBHOOK_TIMEOUT_S} s (WEBHOOK_TIMEOUT_S). "
            "The receiver should answer at once and do slow work afterwards."
        )
    except httpx.HTTPError as exc:
        attempt.error = f"Could not reach {url}: {exc or type(exc).__name__}. Check that the receiver is up."
    else:
        attempt.status_code, attempt.excerpt = response_status, excerpt
        if not attempt.ok:
            attempt.error = _status_error(response_status, excerpt)
    attempt.duration_ms = round((time.monotonic() - start) * 1000)
    return attempt


def _status_error(status_code: int, excerpt: str) -> str:
    if 300 <= status_code < 400:
        return f"HTTP {status_code}: redirects are not followed; set the webhook's URL to the final address."
    detail = f": {excerpt[:200]}" if excerpt else ""
    return f"HTTP {status_code} from the receiver{detail}. It must answer with a 2xx status."


def _post(url: str, addresses: list[IPAddress], body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    # Connect to the addresses just checked, not to whatever a second DNS lookup
    # returns (DNS rebinding); Host and TLS server name stay the URL's own.
    original = httpx.URL(url)
    pinned_headers = {**headers, "Host": original.netloc.decode("ascii")}
    extensions = {"sni_hostname": original.raw_host.decode("ascii")} if original.scheme == "https" else {}
    timeout = httpx.Timeout(settings.WEBHOOK_TIMEOUT_S)
    # trust_env=False: no HTTP(S)_PROXY, so the request goes where it was checked to go.
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for index, ip in enumerate(addresses):
            request = client.build_request(
                "POST",
                original.copy_with(host=str(ip)),
                content=body,
                headers=pinned_headers,
                extensions=extensions,
            )
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise
                continue
            try:
                return response.status_code, _read_excerpt(response)
            finally:
                response.close()
    raise httpx.ConnectError(f"{original.host} resolved to no address")


def _read_excerpt(response: httpx.Response) -> str:
    """The start of the response as text; the rest is not downloaded."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= EXCERPT_CHARS * 4:  # enough bytes for 500 characters of UTF-8
            break
    return b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")[:EXCERPT_CHARS]
