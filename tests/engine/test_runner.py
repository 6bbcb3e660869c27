"""Runs end to end: the real gateway and adapters against a loopback server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import engine.runner
from engine.cache import InMemoryCacheStore, ResponseCache
from engine.events import InProcessEventBus
from engine.gateway import Gateway
from engine.runner import InMemoryResultSink, RunOutcome, RunSpec, plan_stages, run_single
from engine.types import EndpointConfig, Item, ScorerSpec, Stage
from tests.llm_stub import LLMStub

JUDGE_REPLY = {"text": "7"}


def answer(body: dict[str, Any]) -> str:
    """Echo the user prompt; rate anything that asks for grading."""
    user = body["messages"][-1]["content"]
    return JUDGE_REPLY["text"] if "grading" in user else f"echo: {user}"


@pytest.fixture
def stub(stub: LLMStub) -> LLMStub:
    """The shared stub (tests/engine/conftest.py), answering with `answer`."""
    stub.responder = answer
    return stub


def make_endpoint(stub: LLMStub, name: str = "alice-vllm") -> EndpointConfig:
    return EndpointConfig(name=name, base_url=stub.base_url, default_model="stub-small")


def make_items(*topics: str) -> list[Item]:
    return [Item(id=100 + n, input={"topic": t}, reference=t, position=n) for n, t in enumerate(topics)]


TWO_STAGES = [
    Stage(name="first", system="You draft.", user="Draft about {{ topic }}"),
    Stage(name="second", user="Improve [{{ previous }}] given [{{ stages.first }}]"),
]

SCORERS = [
    ScorerSpec(type="keyword", weight=2.0, config={"required_present": ["{{ topic }}", "Paris"]}),
    ScorerSpec(type="format", weight=1.0, config={"check": "length", "max_tokens": 10}),
]


def make_spec(stub: LLMStub, **changes: Any) -> RunSpec:
    fields: dict[str, Any] = {
        "run_id": 1,
        "experiment_id": 10,
        "sweep_id": 20,
        "config": {"temperature": 0.5},
        "stages": TWO_STAGES,
        "items": make_items("Paris", "Rome"),
        "scorers": SCORERS,
        "endpoint": make_endpoint(stub),
    }
    fields.update(changes)
    return RunSpec(**fields)


async def run(
    spec: RunSpec, gateway: Gateway | None = None, **kwargs: Any
) -> tuple[RunOutcome, InMemoryResultSink]:
    sink = InMemoryResultSink()
    if gateway is None:
        async with Gateway() as gateway:
            outcome = await run_single(spec, gateway, sink, **kwargs)
    else:
        outcome = await run_single(spec, gateway, sink, **kwargs)
    assert sink.outcomes == [outcome] and sink.started == [spec.run_id]
    return outcome, sink


def user_prompts(stub: LLMStub) -> list[str]:
    return [r["messages"][-1]["content"] for r in stub.requests]


# -- the pipeline ----------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_second_stage_sees_the_first_stages_output(stub: LLMStub) -> None:
    outcome, sink = await run(make_spec(stub, items=make_items("Paris"), scorers=[]))
    assert outcome.status == "completed", outcome.error
    assert user_prompts(stub) == [
        "Draft about Paris",
        "Improve [echo: Draft about Paris] given [echo: Draft about Paris]",
    ]
    assert stub.requests[0]["messages"][0] == {"role": "system", "content": "You draft."}
    assert len(stub.requests[1]["messages"]) == 1  # no empty system message
    first, second = sink.stage_results
    assert (first.stage_name, first.stage_index, second.stage_index) == ("first", 0, 1)
    assert second.output == f"echo: {second.user_prompt}"
    assert (second.item_id, second.position, second.model, second.finish_reason) == (
        100,
        0,
        "stub-small",
        "stop",
    )
    assert outcome.calls == 2 and outcome.cached_calls == 0
    assert outcome.tokens_in == first.tokens_in + second.tokens_in > 0
    assert outcome.weighted_score is None and outcome.scorer_means == {}


@pytest.mark.asyncio
async def test_the_weighted_score_averages_scorers_by_weight_then_items(stub: LLMStub) -> None:
    outcome, sink = await run(make_spec(stub))
    assert outcome.status == "completed", outcome.error
    values = {(s.item_id, s.scorer): s.value for s in sink.scores}
    # Paris: both keywords present; Rome: only "Rome". Outputs run to 15+ words.
    assert values[(100, "keyword")] == 1.0 and values[(101, "keyword")] == 0.5
    per_item = [(2 * values[(i, "keyword")] + values[(i, "format")]) / 3 for i in (100, 101)]
    assert outcome.weighted_score == pytest.approx(sum(per_item) / 2)
    assert outcome.scorer_means["keyword"] == pytest.approx(0.75)
    assert outcome.score_spread is None  # one sample per item
    assert outcome.scorer_errors == 0 and outcome.latency_ms > 0 and outcome.mean_call_latency_ms > 0


@pytest.mark.asyncio
async def test_a_rerun_costs_no_calls_and_scores_the_same(stub: LLMStub) -> None:
    async with Gateway(ResponseCache()) as gateway:
        first, _ = await run(make_spec(stub), gateway)
        calls = stub.calls
        again, sink = await run(make_spec(stub, run_id=2), gateway)
    assert calls == 4 and stub.calls == calls
    assert again.cached_calls == again.calls == 4
    assert all(row.cached for row in sink.stage_results)
    assert (again.weighted_score, again.scorer_means) == (first.weighted_score, first.scorer_means)
    assert (again.tokens_in, again.tokens_out) == (first.tokens_in, first.tokens_out)


@pytest.mark.asyncio
async def test_a_template_in_a_dataset_value_reaches_the_prompt_verbatim(stub: LLMStub) -> None:
    items = [Item(id=1, input={"topic": "{{ topic.__class__ }} {% if 1 %}x{% endif %}"})]
    spec = make_spec(stub, items=items, stages=TWO_STAGES[:1], scorers=[])
    outcome, _ = await run(spec)
    assert outcome.status == "completed", outcome.error
    assert user_prompts(stub) == ["Draft about {{ topic.__class__ }} {% if 1 %}x{% endif %}"]


@pytest.mark.asyncio
async def test_the_reference_is_kept_from_the_prompt(stub: LLMStub) -> None:
    spec = make_spec(stub, stages=[Stage(name="only", user="{{ reference }}")], scorers=[])
    outcome, _ = await run(spec)
    assert outcome.status == "failed" and "'reference' is undefined" in outcome.error


# -- the config --------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_config_overrides_stage_params_templates_and_model(stub: LLMStub) -> None:
    stages = [
        Stage(name="first", user="Draft {{ topic }}", params={"temperature": 0.1, "max_tokens": 50}),
        Stage(name="second", user="Polish {{ previous }}", model="stub-large", params={"top_p": 0.5}),
    ]
    config = {
        "temperature": 0.9,
        "second.temperature": 0.2,
        "second.user": "Rewrite {{ previous }}",
        "first.max_tokens": None,
        "first.model": "stub-large",
        "seed": 7,
    }
    spec = make_spec(stub, stages=stages, config=config, items=make_items("Paris"), scorers=[])
    outcome, _ = await run(spec)
    assert outcome.status == "completed", outcome.error
    first, second = stub.requests
    assert (first["model"], first["temperature"], first["seed"]) == ("stub-large", 0.9, 7)
    assert "max_tokens" not in first
    assert (second["model"], second["temperature"], second["top_p"]) == ("stub-large", 0.2, 0.5)
    assert second["messages"][-1]["content"].startswith("Rewrite echo: Draft Paris")


def test_a_plain_model_key_overrides_every_stages_model() -> None:
    endpoint = EndpointConfig(name="alice-vllm", base_url="http://x", default_model="base")
    stages = [Stage(name="a", user="u", model="stage-model"), Stage(name="b", user="u")]
    plans = plan_stages(stages, {"model": "swept"}, endpoint)
    assert [p.model for p in plans] == ["swept", "swept"]
    plans = plan_stages(stages, {"endpoint": "alice-vllm"}, endpoint)
    assert [p.model for p in plans] == ["stage-model", "base"]
    assert plans[0].endpoint is endpoint  # the run's own endpoint, named, needs no lookup


@pytest.mark.asyncio
async def test_a_stage_can_use_another_endpoint_by_name(stub: LLMStub) -> None:
    other = EndpointConfig(name="bob-ollama", base_url=stub.base_url + "/", default_model="stub-large")
    spec = make_spec(
        stub,
        stages=TWO_STAGES[:1],
        scorers=[],
        items=make_items("Paris"),
        config={"first.endpoint": "bob-ollama"},
        endpoints={"bob-ollama": other},
    )
    outcome, _ = await run(spec)
    assert outcome.status == "completed", outcome.error
    assert stub.requests[0]["model"] == "stub-large"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"config": {"endpoint": "charlie"}}, "asks for endpoint 'charlie', which is not one of: none"),
        ({"stages": []}, "no stages"),
        (
            {"stages": [Stage(name="first", user="{% if %}")]},
            "Stage 'first' user prompt: Template syntax error on line 1",
        ),
        ({"scorers": [ScorerSpec(type="keyword", config={"typo": 1})]}, "unknown option 'typo'"),
    ],
)
async def test_a_broken_setup_fails_the_run_before_any_call(
    stub: LLMStub, changes: dict[str, Any], message: str
) -> None:
    outcome, sink = await run(make_spec(stub, **changes))
    assert outcome.status == "failed" and message in outcome.error
    assert stub.calls == 0 and sink.stage_results == []


@pytest.mark.asyncio
async def test_a_stage_without_any_model_fails_the_run(stub: LLMStub) -> None:
    endpoint = EndpointConfig(name="alice-vllm", base_url=stub.base_url)
    outcome, _ = await run(make_spec(stub, endpoint=endpoint))
    assert outcome.status == "failed" and "Stage 'first' has no model" in outcome.error


# -- failures ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_failed_call_fails_the_run_and_keeps_what_was_done(stub: LLMStub) -> None:
    async with Gateway() as gateway:
        await run(make_spec(stub, items=make_items("Paris")), gateway)  # caches item 0
        stub.fail_next("status", status=400, body='{"error": {"message": "bad temperature"}}')
        spec = make_spec(stub, run_id=2, items=make_items("Paris", "Rome", "Oslo"), item_concurrency=1)
        outcome, sink = await run(spec, gateway)
    assert outcome.status == "failed"
    assert "Stage 'first' (#1) on item 101 (row 1)" in outcome.error
    assert "HTTP 400" in outcome.error and "bad temperature" in outcome.error
    assert [(r.item_id, r.stage_name) for r in sink.stage_results] == [(100, "first"), (100, "second")]
    assert {s.item_id for s in sink.scores} == {100}
    assert outcome.weighted_score is not None  # over what was scored before the failure


@pytest.mark.asyncio
async def test_a_failure_in_a_later_stage_keeps_the_earlier_stages_row(stub: LLMStub) -> None:
    stages = [TWO_STAGES[0], Stage(name="second", user="{{ missing }}")]
    outcome, sink = await run(make_spec(stub, stages=stages, items=make_items("Paris")))
    assert outcome.status == "failed"
    assert "Stage 'second' (#2) on item 100 (row 0): Template variable missing: 'missing'" in outcome.error
    assert [r.stage_name for r in sink.stage_results] == ["first"] and sink.scores == []


@pytest.mark.asyncio
async def test_other_items_stop_once_the_run_has_failed(stub: LLMStub) -> None:
    stub.latency_ms = 20
    stages = [Stage(name="only", user="{{ topic }}")]
    items = [Item(id=n, input={"topic": f"t{n}"} if n else {}) for n in range(40)]
    outcome, sink = await run(make_spec(stub, stages=stages, items=items, item_concurrency=4))
    assert outcome.status == "failed" and "'topic' is undefined" in outcome.error
    assert stub.calls < 10 and len(sink.stage_results) == stub.calls


@pytest.mark.asyncio
async def test_a_sample_in_progress_stops_at_its_next_stage_and_keeps_its_rows(stub: LLMStub) -> None:
    stub.latency_ms = 50
    items = [Item(id=1, input={"topic": "Paris"}), Item(id=2, input={}, position=1)]
    outcome, sink = await run(make_spec(stub, items=items, item_concurrency=2))
    assert outcome.status == "failed" and "on item 2 (row 1)" in outcome.error
    assert [(r.item_id, r.stage_name) for r in sink.stage_results] == [(1, "first")]
    assert stub.calls == 1 and sink.scores == []


@pytest.mark.asyncio
async def test_a_cancelled_run_with_a_broken_sink_still_stops(stub: LLMStub) -> None:
    class BrokenSink(InMemoryResultSink):
        async def save_stage_results(self, rows: list[Any]) -> None:
            raise ConnectionError("database is down")

    stub.latency_ms = 100
    spec = make_spec(stub, stages=TWO_STAGES[:1], item_concurrency=1)
    async with Gateway() as gateway:
        task = asyncio.create_task(run_single(spec, gateway, BrokenSink()))
        await asyncio.sleep(0.15)  # the first item's rows are waiting to be written
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_a_broken_sink_fails_the_run_with_its_error(stub: LLMStub) -> None:
    class BrokenSink(InMemoryResultSink):
        async def save_stage_results(self, rows: list[Any]) -> None:
            raise ConnectionError("database is down")

    sink = BrokenSink()
    async with Gateway() as gateway:
        outcome = await run_single(make_spec(stub), gateway, sink)
    assert outcome.status == "failed" and outcome.error == "ConnectionError: database is down"


@pytest.mark.asyncio
async def test_a_cancelled_run_writes_what_it_has_before_stopping(stub: LLMStub) -> None:
    stub.latency_ms = 30
    stages = [Stage(name="only", user="{{ topic }}")]
    items = make_items(*(f"t{n}" for n in range(20)))
    sink = InMemoryResultSink()
    async with Gateway() as gateway:
        task = asyncio.create_task(
            run_single(make_spec(stub, stages=stages, items=items, item_concurrency=2), gateway, sink)
        )
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert 0 < len(sink.stage_results) < 20 and sink.outcomes == []


# -- scorers ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_judge_scores_through_the_gateway_and_its_tokens_count(stub: LLMStub) -> None:
    spec = make_spec(
        stub, stages=TWO_STAGES[:1], items=make_items("Paris"), scorers=[ScorerSpec(type="llm_judge")]
    )
    outcome, sink = await run(spec)
    assert outcome.status == "completed", outcome.error
    assert outcome.weighted_score == pytest.approx(6 / 9)
    assert outcome.judge_tokens == sink.scores[0].tokens_in + sink.scores[0].tokens_out > 0


@pytest.mark.asyncio
async def test_a_scorer_error_leaves_that_scorer_out_of_the_score(stub: LLMStub) -> None:
    JUDGE_REPLY["text"] = "no idea"
    try:
        spec = make_spec(
            stub, items=make_items("Paris"), scorers=[*SCORERS, ScorerSpec(type="llm_judge", weight=5)]
        )
        outcome, sink = await run(spec)
    finally:
        JUDGE_REPLY["text"] = "7"
    assert outcome.status == "completed", outcome.error
    judge = next(s for s in sink.scores if s.scorer == "llm_judge")
    assert judge.value is None and "reply is not a rating in the form" in judge.details["error"]
    assert judge.details["raw"] == ["no idea"] and outcome.judge_tokens > 0
    assert outcome.scorer_errors == 1 and outcome.scorer_means["llm_judge"] is None
    # Counted apart from low scores: an output the judge could not rate, not a zero.
    assert outcome.scorer_stats["llm_judge"] == {
        "scored": 0,
        "errors": 1,
        "mean_spread": None,
        "spread_outputs": 0,
    }
    assert outcome.scorer_stats["keyword"]["scored"] == 1 and outcome.scorer_stats["keyword"]["errors"] == 0
    keyword = next(s.value for s in sink.scores if s.scorer == "keyword")
    length = next(s.value for s in sink.scores if s.scorer == "format")
    assert outcome.weighted_score == pytest.approx((2 * keyword + length) / 3)


@pytest.mark.asyncio
async def test_a_sampled_judge_records_its_spread_per_run(stub: LLMStub) -> None:
    replies = iter(["Rating: 6", "Rating: 8", "Rating: 7", "Rating: 7"])
    stub.responder = lambda body: next(replies) if "grading" in body["messages"][-1]["content"] else "ok"
    judge = ScorerSpec(type="llm_judge", name="judge", config={"samples": 2})
    items = make_items("Paris", "Rome")
    spec = make_spec(stub, stages=TWO_STAGES[:1], items=items, scorers=[judge], item_concurrency=1)
    outcome, sink = await run(spec)
    assert outcome.status == "completed", outcome.error
    # Paris: 6 and 8 (spread 1); Rome: 7 and 7 (spread 0).
    assert [s.details["spread"] for s in sink.scores] == [1.0, 0.0]
    assert outcome.scorer_stats["judge"] == {
        "scored": 2,
        "errors": 0,
        "mean_spread": 0.5,
        "spread_outputs": 2,
    }
    assert outcome.weighted_score == pytest.approx(6 / 9)


@pytest.mark.asyncio
async def test_a_scorer_that_fails_outright_records_the_error(stub: LLMStub) -> None:
    judge = ScorerSpec(type="llm_judge", config={"endpoint": "charlie"})
    spec = make_spec(stub, stages=TWO_STAGES[:1], items=make_items("Paris"), scorers=[judge])
    outcome, sink = await run(spec)
    assert outcome.status == "completed" and outcome.weighted_score is None
    assert "judge endpoint 'charlie' is not configured" in sink.scores[0].details["error"]


@pytest.mark.asyncio
async def test_human_ratings_reach_the_human_scorer(stub: LLMStub) -> None:
    spec = make_spec(
        stub, stages=TWO_STAGES[:1], scorers=[ScorerSpec(type="human")], human_scores={100: [1.0, 0.5]}
    )
    outcome, sink = await run(spec)
    by_item = {s.item_id: s.value for s in sink.scores}
    assert by_item == {100: 0.75, 101: None}
    assert outcome.weighted_score == 0.75  # the unrated item is left out


# -- repeats -------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_repeats_are_separate_samples_with_their_own_cache_keys(stub: LLMStub) -> None:
    replies = iter(["Paris", "Lyon", "Paris", "Nice"] * 3)
    stub.responder = lambda body: next(replies)
    keyword = ScorerSpec(type="keyword", config={"required_present": ["Paris"]})
    spec = make_spec(
        stub,
        stages=TWO_STAGES[:1],
        items=make_items("Paris"),
        scorers=[keyword],
        repeats=4,
        config={"temperature": 1.0},
    )
    outcome, sink = await run(spec)
    assert stub.calls == 4
    assert sorted(r.sample_index for r in sink.stage_results) == [0, 1, 2, 3]
    assert len({r.config_hash for r in sink.stage_results}) == 4
    assert sorted(s.sample_index for s in sink.scores) == [0, 1, 2, 3]
    assert outcome.weighted_score == 0.5 and outcome.score_spread == 0.5


@pytest.mark.asyncio
async def test_a_failed_sample_is_named_in_the_error(stub: LLMStub) -> None:
    stub.fail_next("status", status=400)
    spec = make_spec(stub, stages=TWO_STAGES[:1], items=make_items("Paris"), repeats=2, item_concurrency=1)
    outcome, _ = await run(spec)
    assert "on item 100 (row 0), sample 0" in outcome.error


# -- batching and events -----------------------------------------------------------------
@pytest.mark.asyncio
async def test_rows_are_written_in_batches(stub: LLMStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.runner, "WRITE_INTERVAL_S", 60.0)
    items = make_items(*(f"topic {n}" for n in range(150)))
    outcome, sink = await run(make_spec(stub, items=items, item_concurrency=16))
    assert outcome.status == "completed", outcome.error
    assert len(sink.stage_results) == 300 and len(sink.scores) == 300
    assert sink.batches == 4  # 200 rows of each, then the rest at the end


@pytest.mark.asyncio
async def test_a_slow_run_still_writes_as_it_goes(stub: LLMStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.runner, "WRITE_INTERVAL_S", 0.0)
    outcome, sink = await run(make_spec(stub, item_concurrency=1))
    assert outcome.status == "completed", outcome.error
    assert sink.batches == 4  # each item's rows as soon as they are ready


@pytest.mark.asyncio
async def test_a_run_publishes_started_then_completed(stub: LLMStub) -> None:
    bus = InProcessEventBus()
    outcome, _ = await run(make_spec(stub), events=bus)
    started, completed = bus.recent(10)
    assert (started.type, completed.type) == ("run.started", "run.completed")
    assert started.id < completed.id
    assert (completed.sweep_id, completed.run_id) == (20, 1)
    assert started.data == {"items": 2, "repeats": 1, "stages": 2}
    assert completed.data["calls"] == 4 and completed.data["weighted_score"] == outcome.weighted_score


@pytest.mark.asyncio
async def test_a_failed_run_publishes_run_failed_without_bodies(stub: LLMStub) -> None:
    bus = InProcessEventBus()
    await run(make_spec(stub, stages=[Stage(name="only", user="{{ nope }}")]), events=bus)
    failed = bus.recent(10)[-1]
    assert failed.type == "run.failed"
    assert all(isinstance(v, (int, float, type(None))) for v in failed.data.values())


@pytest.mark.asyncio
async def test_the_first_stage_of_every_item_is_looked_up_in_one_query(stub: LLMStub) -> None:
    store = InMemoryCacheStore()
    items = make_items(*(f"topic {n}" for n in range(12)))
    spec = make_spec(stub, stages=TWO_STAGES[:1], items=items, scorers=[], item_concurrency=3, repeats=2)
    async with Gateway(ResponseCache(store)) as gateway:
        outcome, sink = await run(spec, gateway)
    assert outcome.status == "completed" and outcome.calls == stub.calls == 24
    assert store.get_many_calls == 1  # not one per wave of 3 items
    assert [r.user_prompt for r in sink.stage_results].count("Draft about topic 3") == 2

    # A re-run is answered from the cache, looked up the same way.
    async with Gateway(ResponseCache(store)) as gateway:
        again, _ = await run(spec, gateway)
    assert again.cached_calls == again.calls == 24 and stub.calls == 24
    assert store.get_many_calls == 2


@pytest.mark.asyncio
async def test_a_failed_lookup_ahead_only_costs_the_lookups(stub: LLMStub, caplog) -> None:
    class BrokenPrefetch(Gateway):
        async def prefetch(self, calls):
            raise RuntimeError("store away")

    async with BrokenPrefetch() as gateway:
        outcome, _ = await run(make_spec(stub, scorers=[]), gateway)
    assert outcome.status == "completed" and outcome.calls == 4
    assert "looking up the first stage's answers ahead failed" in caplog.text
