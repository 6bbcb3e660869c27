"""Adaptive concurrency (engine/concurrency.py): cut once per overload, pause for
Retry-After, grow back after sustained success, give up only when refused for good."""

from __future__ import annotations

import asyncio
import re

import pytest

from engine.concurrency import AdaptiveLimit
from engine.types import RateLimited


def refusal(retry_after: float | None = None) -> RateLimited:
    return RateLimited(
        "Endpoint 'alice-vllm' (http://gpu:8000/v1)", "HTTP 429: slow down", "HTTP 429", 429, retry_after
    )


async def fill(limit: AdaptiveLimit, n: int) -> list[int]:
    return [await limit.acquire() for _ in range(n)]


@pytest.mark.asyncio
async def test_a_burst_of_refusals_from_one_overload_cuts_once() -> None:
    limit = AdaptiveLimit(16)
    epochs = await fill(limit, 16)
    for epoch in epochs[:10]:  # ten calls sent before the cut, all refused
        limit.rate_limited(epoch, retry_after=0)
    assert (limit.limit, limit.cuts) == (8, 1)


@pytest.mark.asyncio
async def test_a_refusal_of_a_call_sent_after_the_cut_cuts_again_down_to_one() -> None:
    limit = AdaptiveLimit(4)
    (epoch,) = await fill(limit, 1)
    limit.rate_limited(epoch, retry_after=0)
    limit.release()
    assert limit.limit == 2
    for expected in (1, 1):
        (epoch,) = await fill(limit, 1)
        limit.rate_limited(epoch, retry_after=0)
        limit.release()
        assert limit.limit == expected
    assert limit.cuts == 3


@pytest.mark.asyncio
async def test_no_call_gets_a_slot_until_retry_after_has_passed() -> None:
    limit = AdaptiveLimit(4)
    (epoch,) = await fill(limit, 1)
    loop = asyncio.get_running_loop()
    refused_at = loop.time()
    assert limit.rate_limited(epoch, retry_after=0.3) == 0.3
    limit.release()
    # Two slots are free (4 cut to 2), yet nobody may go before the pause ends.
    await asyncio.gather(limit.acquire(), limit.acquire())
    assert loop.time() - refused_at >= 0.3
    assert limit.in_flight == 2


@pytest.mark.asyncio
async def test_without_retry_after_the_pause_doubles_per_refusal_in_a_row() -> None:
    limit = AdaptiveLimit(8, backoff_base_s=0.5)
    pauses = []
    for _ in range(4):
        (epoch,) = await fill(limit, 1)
        pauses.append(limit.rate_limited(epoch, retry_after=None))
        limit.release()
        limit._resume()  # not waiting the pauses out: only their length matters here
    assert pauses == [0.5, 1.0, 2.0, 4.0]
    (epoch,) = await fill(limit, 1)
    limit.release()
    limit.succeeded()  # a success ends the streak
    (epoch,) = await fill(limit, 1)
    assert limit.rate_limited(epoch, retry_after=None) == 0.5


@pytest.mark.asyncio
async def test_an_hour_of_retry_after_is_capped() -> None:
    limit = AdaptiveLimit(2, max_pause_s=60.0)
    (epoch,) = await fill(limit, 1)
    assert limit.rate_limited(epoch, retry_after=3600.0) == 60.0
    limit.release()
    limit._resume()


@pytest.mark.asyncio
async def test_the_limit_grows_back_by_one_per_window_of_successes_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(6)
    (epoch,) = await fill(limit, 1)
    limit.rate_limited(epoch, retry_after=0)
    limit.release()
    assert limit.limit == 3
    seen = []
    for _ in range(3 + 4 + 5 + 10):
        await limit.acquire()
        limit.release()
        limit.succeeded()
        seen.append(limit.limit)
    # 3 successes at 3 make it 4, then 4 at 4 make it 5, 5 at 5 make it 6; never above.
    assert seen[2] == 4 and seen[6] == 5 and seen[11] == 6 and max(seen) == 6


@pytest.mark.asyncio
async def test_callers_waiting_for_a_slot_are_let_in_as_the_limit_grows() -> None:
    limit = AdaptiveLimit(2)
    (epoch,) = await fill(limit, 1)
    limit.rate_limited(epoch, retry_after=0)  # 2 -> 1; the refused call still holds its slot
    waiting = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    limit.succeeded()  # one success at limit 1 is a window: 1 -> 2
    await asyncio.wait_for(waiting, 1)
    assert limit.in_flight == 2


@pytest.mark.asyncio
async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    limit = AdaptiveLimit(1)
    await limit.acquire()
    waiting = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    limit.release()
    assert limit.in_flight == 0
    await asyncio.wait_for(limit.acquire(), 1)


@pytest.mark.asyncio
async def test_a_waiter_cancelled_as_a_slot_frees_raises_only_its_cancellation() -> None:
    limit = AdaptiveLimit(1)
    await limit.acquire()
    waiting = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    waiting.cancel()  # its future is cancelled now, the task learns it on its next step...
    limit.release()  # ...after this release has dropped that future from the queue
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limit.in_flight == 0


@pytest.mark.asyncio
async def test_a_burst_of_refusals_without_retry_after_pauses_as_one_overload() -> None:
    limit = AdaptiveLimit(32, backoff_base_s=0.5)
    epochs = await fill(limit, 32)
    pauses = [limit.rate_limited(epoch, retry_after=None) for epoch in epochs]
    assert max(pauses) == 0.5  # not 0.5 * 2**31, capped at the maximum


@pytest.mark.asyncio
async def test_a_call_gives_up_only_once_the_endpoint_answered_nothing_else_for_the_patience() -> None:
    limit = AdaptiveLimit(4, patience_s=0.2)
    assert limit.give_up(refusal(), 1) is None
    await asyncio.sleep(0.1)
    limit.succeeded()  # another call went through: the clock starts again
    assert limit.give_up(refusal(), 2) is None
    await asyncio.sleep(0.25)
    error = limit.give_up(refusal(), 3)
    assert error is not None and not isinstance(error, RateLimited)
    message = str(error)
    assert message.startswith("Endpoint 'alice-vllm' (http://gpu:8000/v1): HTTP 429: slow down")
    stalled = re.search(r"every call was refused for ([\d.]+) s, with concurrency cut to 4 of 4", message)
    assert stalled and float(stalled[1]) >= 0.2  # however late the loop woke up
    assert "[3 attempts]" in message
    assert "rate limits" in message and "concurrency" in message
    assert error.status == 429 and not error.permanent
    assert "slow down" not in error.public  # the body stays out of what the UI may show


@pytest.mark.asyncio
async def test_a_quiet_spell_between_refusals_is_not_counted_as_a_stall() -> None:
    # As when a sweep is paused for a while between two refusals.
    limit = AdaptiveLimit(4, patience_s=0.2, max_pause_s=0.05)
    assert limit.give_up(refusal(), 1) is None
    await asyncio.sleep(0.25)  # longer than any pause: nobody was asking
    assert limit.give_up(refusal(), 2) is None


@pytest.mark.asyncio
async def test_a_call_refused_again_and_again_while_others_pass_gives_up() -> None:
    limit = AdaptiveLimit(4, max_refusals=5)
    for n in range(1, 5):
        limit.succeeded()
        assert limit.give_up(refusal(), n) is None
    error = limit.give_up(refusal(), 5)
    assert error is not None
    assert "refused 5 times while other calls went through" in str(error)
    assert "tokens per minute" in str(error)
