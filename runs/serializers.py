from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from engine.runner import RunFailure
from engine.sweep import MAX_CONCURRENT, MAX_REPEATS, MAX_SEED, MAX_TOKEN_BUDGET
from experiments.models import DatasetItem, Experiment
from experiments.serializers import JSONValueField, ParameterSpaceField
from experiments.validation import extra_params_for, validate_parameter_space
from projects.access import check_role, visible
from projects.models import Role
from runs.export import resolved_stages
from runs.models import Run, RunStatus, Score, StageResult, Sweep, SweepStatus, SweepType
from runs.racing import race_summary
from runs.sweeps import Plan, SweepRequest, SweepRequestError, plan_sweep


# -- sweeps -------------------------------------------------------------------------
class RaceEstimateSerializer(serializers.Serializer):
    schedule = serializers.ListField(
        child=serializers.IntegerField(), help_text="Rows scored by each round's end."
    )
    first_round_calls = serializers.IntegerField(help_text="Every candidate on the first slice.")
    grid_calls = serializers.IntegerField(help_text="The worst case: nobody dropped (the full grid).")
    confidence = serializers.FloatField()


class RaceRoundSerializer(serializers.Serializer):
    round = serializers.IntegerField()
    rows = serializers.IntegerField(help_text="Rows every candidate of the round has scored.")
    candidates = serializers.IntegerField()
    leader = serializers.IntegerField(required=False, allow_null=True, help_text="Run id; once closed.")
    eliminated = serializers.ListField(child=serializers.IntegerField(), required=False)
    survivors = serializers.IntegerField(required=False)


class RaceSerializer(serializers.Serializer):
    round = serializers.IntegerField()
    rows = serializers.IntegerField(help_text="The current slice.")
    rows_total = serializers.IntegerField()
    schedule = serializers.ListField(child=serializers.IntegerField())
    confidence = serializers.FloatField()
    alpha = serializers.FloatField(help_text="Each elimination test's level: (1 - confidence) / tests.")
    candidates = serializers.IntegerField(help_text="Still in the race.")
    rounds = RaceRoundSerializer(many=True)
    calls = serializers.IntegerField(help_text="Calls asked for: each candidate's rows new to it.")
    grid_calls = serializers.IntegerField()
    calls_saved = serializers.IntegerField(help_text="Against the full grid.")
    finished = serializers.BooleanField()


class EstimateSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    calls = serializers.IntegerField(help_text="Stage and judge calls, all repeats.")
    judge_calls = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    max_tokens = serializers.IntegerField(help_text="Worst case: every prompt plus its max_tokens.")
    race = RaceEstimateSerializer(required=False, help_text="Racing sweeps only.")
    max_cost = serializers.FloatField(
        required=False, help_text="max_tokens at the endpoint's dearest price, in CURRENCY."
    )


class SweepSerializer(serializers.ModelSerializer):
    estimate = EstimateSerializer(read_only=True)
    progress = serializers.FloatField(read_only=True)
    race = serializers.SerializerMethodField(help_text="Racing sweeps: rounds, eliminations, calls saved.")
    total_calls = serializers.IntegerField(read_only=True, help_text="LLM calls planned (the estimate).")

    class Meta:
        model = Sweep
        fields = [
            "id",
            "experiment",
            "type",
            "status",
            "config",
            "total_runs",
            "completed_runs",
            "failed_runs",
            "cancelled_runs",
            "progress",
            "calls_done",
            "total_calls",
            "max_concurrent",
            "tokens_used",
            "token_budget",
            "estimate",
            "race",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(RaceSerializer(allow_null=True))
    def get_race(self, sweep: Sweep) -> dict | None:
        summary = race_summary(sweep)
        return None if summary is None else RaceSerializer(summary).data


class SweepFilterSerializer(serializers.Serializer):
    experiment = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    status = serializers.ChoiceField(choices=SweepStatus.choices, required=False)


class SweepLaunchSerializer(serializers.Serializer):
    """A sweep request, checked and sized; `validated_data["plan"]` holds the plan."""

    type = serializers.ChoiceField(choices=SweepType.choices, default=SweepType.GRID)
    parameter_space = ParameterSpaceField(required=False, help_text="Default: the experiment's.")
    n_samples = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Configurations to try (random, guided)."
    )
    max_concurrent = serializers.IntegerField(required=False, min_value=1, max_value=MAX_CONCURRENT)
    max_tokens = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_TOKEN_BUDGET, help_text="Token budget."
    )
    max_cost = serializers.FloatField(
        required=False, allow_null=True, min_value=0.000001, max_value=10**9, help_text="Budget in CURRENCY."
    )
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_SEED)
    repeats = serializers.IntegerField(required=False, default=1, min_value=1, max_value=MAX_REPEATS)
    options = serializers.DictField(
        required=False,
        help_text="Guided sweeps: top_k, initial, exploit_ratio, round_size; "
        "racing sweeps: min_items, eta, confidence.",
    )
    dry_run = serializers.BooleanField(
        required=False, default=False, help_text="Estimate only; create nothing."
    )

    def validate(self, attrs: dict) -> dict:
        experiment: Experiment = self.context["experiment"]
        # n_samples, options and sizes are the engine's to check (plan_sweep names the field).
        if "parameter_space" in attrs:
            try:
                space = attrs["parameter_space"]
                extras = extra_params_for(experiment.project_id, experiment.endpoint, space)
                validate_parameter_space(space, set(experiment.stage_names), extras)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.message_dict) from None
        attrs["request"] = self.sweep_request(attrs)
        attrs["plan"] = self.plan(experiment, attrs["request"])
        return attrs

    @staticmethod
    def sweep_request(attrs: dict) -> SweepRequest:
        return SweepRequest(
            type=attrs["type"],
            parameter_space=attrs.get("parameter_space"),
            n_samples=attrs.get("n_samples"),
            seed=attrs.get("seed"),
            repeats=attrs.get("repeats", 1),
            max_concurrent=attrs.get("max_concurrent"),
            max_tokens=attrs.get("max_tokens"),
            max_cost=attrs.get("max_cost"),
            options=attrs.get("options") or None,
        )

    @staticmethod
    def plan(experiment: Experiment, request: SweepRequest) -> Plan:
        try:
            return plan_sweep(experiment, request)
        except SweepRequestError as exc:
            raise serializers.ValidationError({exc.field: str(exc)}) from None


class SweepEstimateSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    type = serializers.ChoiceField(choices=SweepType.choices)
    total_runs = serializers.IntegerField()
    token_budget = serializers.IntegerField(help_text="max_tokens, or MAX_TOKENS_PER_SWEEP.")
    estimate = EstimateSerializer()


def estimate_response(plan: Plan, request: SweepRequest) -> dict[str, Any]:
    return {
        "dry_run": True,
        "type": request.type,
        "total_runs": plan.planned_runs,
        "token_budget": request.max_tokens or settings.MAX_TOKENS_PER_SWEEP,
        "estimate": plan.estimate,
    }


# -- runs ---------------------------------------------------------------------------
class RunSerializer(serializers.ModelSerializer):
    class Meta:
        model = Run
        fields = [
            "id",
            "experiment",
            "sweep",
            "status",
            "config",
            "config_hash",
            "weighted_score",
            "score_spread",
            "tokens_in",
            "tokens_out",
            "latency_ms",
            "wall_ms",
            "calls",
            "cached_calls",
            "scorer_stats",
            "eliminated_after",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class StageResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = StageResult
        fields = [
            "id",
            "item",
            "sample_index",
            "stage_index",
            "stage_name",
            "model",
            "system_prompt",
            "user_prompt",
            "output",
            "tokens_in",
            "tokens_out",
            "latency_ms",
            "cached",
        ]
        read_only_fields = fields


class ScoreSerializer(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Score
        fields = [
            "id",
            "item",
            "sample_index",
            "scorer",
            "value",
            "details",
            "source",
            "author",
            "comment",
            "created_at",
        ]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    stage_results = StageResultSerializer(many=True, read_only=True)
    scores = ScoreSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "stage_results", "scores"]
        read_only_fields = fields


ORDERINGS = {
    "score": "weighted_score",
    "tokens": "tokens_total",
    "latency": "latency_ms",
    "date": "created_at",
}


class RunFilterSerializer(serializers.Serializer):
    experiment = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    sweep = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    min_score = serializers.FloatField(required=False, min_value=0, max_value=1)
    max_score = serializers.FloatField(required=False, min_value=0, max_value=1)
    ordering = serializers.ChoiceField(
        choices=[*ORDERINGS, *(f"-{name}" for name in ORDERINGS)],
        required=False,
        help_text="score, tokens, latency or date; a leading - sorts descending. Default: -date.",
    )


class RunCreateSerializer(serializers.Serializer):
    """An ad-hoc run: `config` over the experiment's dataset, or over `input` alone."""

    experiment = serializers.PrimaryKeyRelatedField(
        queryset=Experiment.objects.none(), help_text="One of your projects' experiments."
    )
    config = JSONValueField(default=dict, help_text="Parameters, as a sweep would set them.")
    input = JSONValueField(
        required=False,
        help_text="Template variables of one input to evaluate instead of the dataset; "
        "a `reference` key is the expected answer.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        user = getattr(self.context.get("request"), "user", None)
        self.fields["experiment"].queryset = visible(Experiment.objects.select_related("endpoint"), user)

    def validate_experiment(self, value: Experiment) -> Experiment:
        # The role where the experiment is resolved: the viewset's early check only
        # sees what looks like an id, and "5.0" resolves to experiment 5 here.
        check_role(value.member_role, Role.EDITOR)
        return value

    def validate_config(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError("config must be an object of parameters.")
        return value

    def validate_input(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError("input must be an object of template variables.")
        if not isinstance(value.get("reference", ""), str):
            raise serializers.ValidationError("input.reference must be text.")
        return value

    def validate(self, attrs: dict) -> dict:
        experiment: Experiment = attrs["experiment"]
        if experiment.endpoint_id is None:
            raise serializers.ValidationError(
                {"experiment": "The experiment has no endpoint; choose one first."}
            )
        if "input" not in attrs and not experiment.items.exists():
            raise serializers.ValidationError(
                {"input": "The experiment has no dataset rows: give an input, or import a dataset."}
            )
        try:
            resolved_stages(experiment, attrs["config"])
        except RunFailure as exc:
            raise serializers.ValidationError({"config": str(exc)}) from None
        return attrs


class RatingSerializer(serializers.Serializer):
    rating = serializers.IntegerField(min_value=1, max_value=10, help_text="1 (bad) to 10 (excellent).")
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    item = serializers.PrimaryKeyRelatedField(
        queryset=DatasetItem.objects.none(),
        required=False,
        allow_null=True,
        help_text="Rate one item's output.",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        run = self.context.get("run")
        if run is not None:
            self.fields["item"].queryset = DatasetItem.objects.filter(experiment_id=run.experiment_id)


class RatingResultSerializer(serializers.Serializer):
    score = ScoreSerializer()
    weighted_score = serializers.FloatField(allow_null=True)


class LeaderboardQuerySerializer(serializers.Serializer):
    experiment = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    sweep = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    n = serializers.IntegerField(required=False, default=10, min_value=1, max_value=100)


class JudgeRunStatsSerializer(serializers.Serializer):
    could_not_rate = serializers.IntegerField()
    mean_spread = serializers.FloatField(allow_null=True)


class LeaderboardRowSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    run_id = serializers.IntegerField()
    sweep_id = serializers.IntegerField(allow_null=True)
    config = serializers.DictField()
    config_hash = serializers.CharField()
    weighted_score = serializers.FloatField()
    ci_low = serializers.FloatField(allow_null=True, help_text="95% percentile bootstrap over items.")
    ci_high = serializers.FloatField(allow_null=True)
    n_items = serializers.IntegerField()
    scorer_means = serializers.DictField(child=serializers.FloatField(allow_null=True))
    judges = serializers.DictField(
        child=JudgeRunStatsSerializer(),
        help_text="Per judge scorer: outputs it could not rate (not counted as low scores) and "
        "the mean spread of its ratings when asked several times (1-10 points).",
    )
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    latency_ms = serializers.FloatField()
    tied_with_leader = serializers.BooleanField(
        allow_null=True, help_text="A paired bootstrap cannot tell this run from the leader."
    )
    pareto = serializers.BooleanField(
        help_text="No row here has a better score, fewer tokens and lower latency."
    )
    eliminated_after = serializers.IntegerField(
        allow_null=True, help_text="Racing: rows it had scored when it was dropped; null for survivors."
    )


class LeaderboardSerializer(serializers.Serializer):
    experiment = serializers.IntegerField()
    sweep = serializers.IntegerField(allow_null=True)
    results = LeaderboardRowSerializer(many=True)


class CacheStatsQuerySerializer(serializers.Serializer):
    project = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="One of your projects; default: all."
    )


class CacheStatsSerializer(serializers.Serializer):
    hits = serializers.IntegerField(help_text="Σ hit_count over the cache table.")
    misses = serializers.IntegerField(help_text="Entries: each was stored after a miss.")
    hit_rate = serializers.FloatField(help_text="hits / (hits + misses); 0 when both are 0.")
    entries = serializers.IntegerField()
    storage_bytes = serializers.IntegerField(help_text="Characters of stored answers.")


class CompareQuerySerializer(serializers.Serializer):
    a = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="The run compared from.")
    b = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="The run compared to.")


class ComparedItemSerializer(serializers.Serializer):
    item_id = serializers.IntegerField()
    a_score = serializers.FloatField()
    b_score = serializers.FloatField()
    delta = serializers.FloatField(help_text="b_score − a_score.")
    a_output = serializers.CharField()
    b_output = serializers.CharField()


class ComparisonSerializer(serializers.Serializer):
    a = serializers.IntegerField()
    b = serializers.IntegerField()
    mean_delta = serializers.FloatField(allow_null=True, help_text="Mean of b − a over the shared items.")
    ci_low = serializers.FloatField(allow_null=True, help_text="95% paired bootstrap interval.")
    ci_high = serializers.FloatField(allow_null=True)
    items = ComparedItemSerializer(many=True)
    regressions = serializers.ListField(child=serializers.IntegerField(), help_text="Items b scored lower.")
