"""Adaptive concurrency per endpoint: rate limits are absorbed, not failed.

Each endpoint gets an `AdaptiveLimit` (AIMD, as TCP does with its window): it
lets up to `limit` calls be in flight, starting at the endpoint's ceiling (its
`max_concurrency`, or the gateway's global limit). A rate-limited answer (429,
503) halves the limit, at most once per overload: only an answer to a call sent
under the current limit cuts it, so a burst of 429s from calls sent before the
cut counts once. It also pauses the endpoint for the server's Retry-After (or a
growing backoff when it sends none): no call is sent to it until then. After
`limit` successes in a row the limit grows by one, back up to the ceiling.

Without rate limiting the hot path is a few attribute reads and no clock reads:
the pause clears itself with a timer instead of callers checking the time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, replace

from engine.types import AdapterError, EndpointConfig, RateLimited

# Multiplicative decrease on a rate-limited answer (TCP's 0.5).
DECREASE = 0.5
# Backoff without Retry-After: BACKOFF_BASE_S doubled per rate-limited answer in a row.
BACKOFF_BASE_S = 0.5
MAX_BACKOFF_S = 30.0
MAX_PAUSE_S = 60.0  # a Retry-After of an hour would stall a sweep; ask again after a minute
# A call gives up when the endpoint has answered nothing but rate limits for this long...
PATIENCE_S = 120.0
# ...or when this call alone was refused this often while others went through (a
# request over a per-request limit, e.g. OpenAI's tokens per minute, never passes).
MAX_REFUSALS_PER_CALL = 20


class AdaptiveLimit:
    """The calls one endpoint may have in flight. Not thread-safe: one event loop."""

    def __init__(
        self,
        ceiling: int,
        *,
        patience_s: float = PATIENCE_S,
        max_refusals: int = MAX_REFUSALS_PER_CALL,
        backoff_base_s: float = BACKOFF_BASE_S,
        max_pause_s: float = MAX_PAUSE_S,
    ):
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self.in_flight = 0
        # Bumped by each cut: a call remembers the epoch it was sent in, and only a
        # refusal of a call sent since the last cut cuts again.
        self.epoch = 0
        self.cuts = 0
        self.successes = 0  # every success, ever: progress, for the patience rule
        self.patience_s = patience_s
        self.max_refusals = max_refusals
        self.backoff_base_s = backoff_base_s
        self.max_pause_s = max_pause_s
        self._streak = 0  # successes since the limit last changed
        self._refusals_in_a_row = 0  # rate-limited answers since the last success
        self._paused = False
        self._resume_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._stalled_since: float | None = None  # first refusal after the last success seen
        self._successes_seen = 0
        self._last_refusal_at = 0.0

    # -- slots ---------------------------------------------------------------
    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch to hand back to `rate_limited`."""
        if self.in_flight < self.limit and not self._paused and not self._waiters:
            self.in_flight += 1
            return self.epoch
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted as we were cancelled: hand it on
            elif future in self._waiters:  # a release may already have dropped it
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit and not self._paused:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(self.epoch)

    # -- feedback ------------------------------------------------------------
    def succeeded(self) -> None:
        self.successes += 1
        if self.limit < self.ceiling:
            self._streak += 1
            if self._streak >= self.limit:  # a whole window went through: one more
                self.limit += 1
                self._streak = 0
                self._wake()
        self._refusals_in_a_row = 0

    def rate_limited(self, epoch: int, retry_after: float | None) -> float:
        """A call sent in `epoch` was refused: cut (once per overload) and pause.
        Returns the pause in seconds."""
        if epoch == self.epoch:
            self.limit = max(1, int(self.limit * DECREASE))
            self.epoch += 1
            self.cuts += 1
            self._streak = 0
            # Per overload, like the cut: 32 calls refused at once are one overload,
            # and counting each would stretch the pause to its maximum at once.
            self._refusals_in_a_row += 1
        if retry_after is None:
            delay = min(self.backoff_base_s * 2 ** min(self._refusals_in_a_row - 1, 16), MAX_BACKOFF_S)
        else:
            delay = retry_after
        delay = min(max(0.0, delay), self.max_pause_s)
        if delay > 0:
            self._pause(delay)
        return delay

    def _pause(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        resume_at = loop.time() + delay
        if self._paused and resume_at <= self._resume_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._paused, self._resume_at = True, resume_at
        self._timer = loop.call_at(resume_at, self._resume)

    def _resume(self) -> None:
        self._paused, self._timer = False, None
        self._wake()

    def give_up(self, refused: RateLimited, refusals: int) -> AdapterError | None:
        """The error to fail a call with after its `refusals`-th rate-limited answer,
        or None to retry it. Only calls that keep being refused give up: the endpoint
        answered nothing else for `patience_s`, or this call was refused too often."""
        now = asyncio.get_running_loop().time()
        # A new stall starts after a success, or after a quiet spell longer than any
        # pause (nobody asked: a paused sweep), which is no evidence of refusals.
        quiet = now - self._last_refusal_at > 2 * self.max_pause_s
        if self.successes != self._successes_seen or self._stalled_since is None or quiet:
            self._successes_seen, self._stalled_since = self.successes, now
        self._last_refusal_at = now
        stalled = now - self._stalled_since
        if stalled >= self.patience_s:
            why = (
                f"every call was refused for {round(stalled, 1):g} s, with concurrency cut to "
                f"{self.limit} of {self.ceiling}"
            )
            hint = (
                "The server keeps rate limiting: check the account's rate limits and quota, "
                "lower the sweep's concurrency or the endpoint's max concurrency, or try again later."
            )
            return refused.exhausted(refusals, why, hint)
        if refusals >= self.max_refusals:
            why = f"this call was refused {refusals} times while other calls went through"
            hint = (
                "The request may exceed a per-request limit (such as tokens per minute); "
                "shorten the prompt or max_tokens, or raise the limit."
            )
            return refused.exhausted(refusals, why, hint)
        return None


# -- a sweep's workers ----------------------------------------------------------------
@dataclass
class Shares:
    workers: int  # orchestrators for the sweep
    endpoints: dict[str, EndpointConfig]  # by name, each with one worker's share of its limit


def concurrency_shares(endpoints: dict[str, EndpointConfig], used: set[str], workers: int) -> Shares:
    """The one rule for splitting endpoint limits between a sweep's workers: no more
    workers than the smallest positive max_concurrency among the endpoints the sweep
    `used`, and each worker gets limit // workers of every endpoint (at least 1), so
    together they never exceed a used endpoint's limit. 0 means no limit of its own."""
    limits = [endpoints[name].max_concurrency for name in used if name in endpoints]
    workers = max(1, min([workers, *(limit for limit in limits if limit > 0)]))
    shared = {
        name: endpoint
        if endpoint.max_concurrency <= 0 or workers == 1
        else replace(endpoint, max_concurrency=max(1, endpoint.max_concurrency // workers))
        for name, endpoint in endpoints.items()
    }
    return Shares(workers, shared)
