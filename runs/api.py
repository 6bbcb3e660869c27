import json
from collections.abc import Callable
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from engine.runner import RunFailure
from engine.sweep import config_key
from experiments.models import Experiment
from experiments.serializers import (
    ExperimentSerializer,
    ExportedConfigSerializer,
    JudgeAgreementSerializer,
    ReportSerializer,
)
from projects.access import get_for_user, visible
from projects.api import Conflict, ProjectScopedMixin
from projects.models import Project
from runs import export, results
from runs.bridge import cache_table_stats
from runs.compare import compare_runs
from runs.judging import judges
from runs.leaderboard import RatingRefused, leaderboard, record_rating
from runs.models import Run, Sweep, SweepStateError
from runs.pagination import RunPagination
from runs.queue import enqueue
from runs.report import report_markdown
from runs.serializers import (
    ORDERINGS,
    CacheStatsQuerySerializer,
    CacheStatsSerializer,
    CompareQuerySerializer,
    ComparisonSerializer,
    LeaderboardQuerySerializer,
    LeaderboardSerializer,
    RatingResultSerializer,
    RatingSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunFilterSerializer,
    RunSerializer,
    SweepEstimateSerializer,
    SweepFilterSerializer,
    SweepLaunchSerializer,
    SweepSerializer,
    estimate_response,
)
from runs.sweeps import SweepRequestError, launch_sweep
from runs.tasks import execute_run


def query(serializer_class: type, request: Request) -> dict[str, Any]:
    """Query parameters checked by a serializer: a bad one is a 400 that names it.
    A blank one too: DRF would take `?status=` as absent, which the schema does not say."""
    blank = {
        name: ["Leave it out instead of sending it blank."]
        for name, value in request.query_params.items()
        if value == ""
    }
    if blank:
        raise ValidationError(blank)
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# -- runs ---------------------------------------------------------------------------
class StreamRenderer(renderers.BaseRenderer):
    """What a streamed export answers with; only errors pass through here, as JSON."""

    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        response = (renderer_context or {}).get("response")
        if response is not None:  # an error: say it is JSON
            response["Content-Type"] = "application/json"
        return renderers.JSONRenderer().render(data)


class CSVStreamRenderer(StreamRenderer):
    format = "csv"
    media_type = "text/csv"


class JSONLStreamRenderer(StreamRenderer):
    format = "jsonl"
    media_type = "application/x-ndjson"


def filtered_runs(runs: QuerySet[Run], params: dict[str, Any]) -> QuerySet[Run]:
    lookups = {
        "experiment": "experiment_id",
        "sweep": "sweep_id",
        "status": "status",
        "min_score": "weighted_score__gte",
        "max_score": "weighted_score__lte",
    }
    runs = runs.filter(**{lookups[k]: v for k, v in params.items() if k in lookups})
    return ordered_runs(runs, params.get("ordering", "-date"))


def ordering_of(ordering: str) -> tuple[str, bool]:
    """(field, descending) of an `ordering` query value."""
    return ORDERINGS[ordering.lstrip("-")], ordering.startswith("-")


def ordered_runs(runs: QuerySet[Run], ordering: str) -> QuerySet[Run]:
    field, descending = ordering_of(ordering)
    if field == "tokens_total":  # Run.total_tokens is a property
        runs = runs.annotate(tokens_total=F("tokens_in") + F("tokens_out"))
    # Unscored runs go last either way (the score's two indexes sort NULLS LAST both
    # ways; the other fields are never null, so one index read backwards serves both);
    # the id keeps pages stable.
    nulls = {"nulls_last": True} if field == "weighted_score" else {}
    key = F(field).desc(**nulls) if descending else F(field).asc(**nulls)
    return runs.order_by(key, "-id" if descending else "id")


def start_adhoc_run(experiment: Experiment, config: dict, input: dict | None = None) -> Run:
    with transaction.atomic():
        run = Run.objects.create(experiment=experiment, config=config, config_hash=config_key(config))
        enqueue(execute_run, run.pk, input)
    return run


class RunViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Runs of your projects' experiments; editors start ad-hoc runs and rate."""

    queryset = Run.objects.all()
    serializer_class = RunSerializer
    pagination_class = RunPagination

    def project_of_new(self, request: Request) -> Project | None:
        experiment = request.data.get("experiment") if hasattr(request.data, "get") else None
        if not str(experiment).isdigit():
            return None
        return visible(Project.objects.filter(experiments=experiment), request.user).first()

    def get_serializer_class(self) -> type:
        return {"retrieve": RunDetailSerializer, "create": RunCreateSerializer}.get(
            self.action, RunSerializer
        )

    def get_queryset(self) -> QuerySet[Run]:
        runs = super().get_queryset()
        if self.action == "retrieve":
            return runs.prefetch_related("stage_results", "scores__author")
        if self.action == "score":
            return runs.select_related("experiment")
        return runs

    @extend_schema(parameters=[RunFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        params = query(RunFilterSerializer, request)
        runs = filtered_runs(self.get_queryset(), params)
        page = self.paginator.paginate(runs, *ordering_of(params.get("ordering", "-date")), request)
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    @extend_schema(request=RunCreateSerializer, responses={202: RunSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = RunCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        run = start_adhoc_run(**serializer.validated_data)
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=RatingSerializer, responses={201: RatingResultSerializer})
    @action(detail=True, methods=["post"])
    def score(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        serializer = RatingSerializer(data=request.data, context={"run": run})
        serializer.is_valid(raise_exception=True)
        try:
            score = record_rating(run, request.user, **serializer.validated_data)
        except RatingRefused as exc:
            raise Conflict(str(exc)) from None
        result = {"score": score, "weighted_score": run.weighted_score}
        return Response(RatingResultSerializer(result).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[LeaderboardQuerySerializer], responses=LeaderboardSerializer)
    @action(detail=False, methods=["get"], pagination_class=None)
    def leaderboard(self, request: Request) -> Response:
        params = query(LeaderboardQuerySerializer, request)
        experiment = get_for_user(Experiment, request.user, pk=params["experiment"])
        rows = leaderboard(experiment, n=params["n"], sweep_id=params.get("sweep"))
        data = {"experiment": experiment.pk, "sweep": params.get("sweep"), "results": rows}
        return Response(LeaderboardSerializer(data).data)

    @extend_schema(parameters=[CompareQuerySerializer], responses=ComparisonSerializer)
    @action(detail=False, methods=["get"], pagination_class=None)
    def compare(self, request: Request) -> Response:
        """Run b against run a, item by item (runs of one experiment)."""
        params = query(CompareQuerySerializer, request)
        a = get_for_user(Run.objects.select_related("experiment"), request.user, pk=params["a"])
        b = get_for_user(Run, request.user, pk=params["b"])
        if b.experiment_id != a.experiment_id:
            raise ValidationError(
                {"b": "Run b belongs to another experiment; compare runs of one experiment."}
            )
        return Response(ComparisonSerializer(compare_runs(a, b)).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("sweep", int, required=True),
            OpenApiParameter("format", str, enum=sorted(results.FORMATS), description="Default csv."),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            # errors are JSON whatever format was asked for
            **{(code, "application/json"): OpenApiTypes.OBJECT for code in (400, 401, 403, 404)},
        },
        description="Every run x dataset row of a sweep, streamed: configuration, input, output, "
        "each score, tokens, latency, and cost when the endpoint has prices. Formula-looking CSV "
        "cells are neutralised.",
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="export",
        url_name="export",
        renderer_classes=[CSVStreamRenderer, JSONLStreamRenderer],
        pagination_class=None,
    )
    def export(self, request: Request) -> StreamingHttpResponse:
        sweep_id = request.query_params.get("sweep", "")
        if not sweep_id.isdigit():
            raise serializers.ValidationError({"sweep": ["Give the sweep's id: ?sweep=<id>."]})
        sweep = get_for_user(Sweep.objects.select_related("experiment__endpoint"), request.user, pk=sweep_id)
        fmt = request.accepted_renderer.format
        chunks = results.stream(sweep, fmt)
        if isinstance(request._request, ASGIRequest):  # daphne: or Django would buffer it all
            chunks = results.async_chunks(chunks)
        response = StreamingHttpResponse(chunks, content_type=results.FORMATS[fmt])
        response["Content-Disposition"] = f'attachment; filename="sweep-{sweep.pk}.{fmt}"'
        return response


# -- sweeps -------------------------------------------------------------------------
class SweepViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Sweep.objects.all()
    serializer_class = SweepSerializer

    @extend_schema(parameters=[SweepFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        params = query(SweepFilterSerializer, request)
        sweeps = self.get_queryset().filter(
            **{("experiment_id" if k == "experiment" else k): v for k, v in params.items()}
        )
        page = self.paginate_queryset(sweeps.order_by("-created_at", "-id"))
        return self.get_paginated_response(SweepSerializer(page, many=True).data)


# -- an experiment's sweeps and results ------------------------------------------------
class MarkdownRenderer(renderers.BaseRenderer):
    media_type = "text/markdown"
    format = "md"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, dict) and "detail" in data:  # an error
            data = str(data["detail"])
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        return text.encode(self.charset)


class ExportRenderer(renderers.BaseRenderer):
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        response = (renderer_context or {}).get("response")
        failed = response is not None and response.status_code >= 400
        # An error, or the OPTIONS description of the route: not an export.
        if failed or not (isinstance(data, dict) and {"metadata", "config", "stages"} <= set(data)):
            body = renderers.JSONRenderer().render(data)
            return export.to_yaml(json.loads(body)).encode() if self.format == "yaml" else body
        writer, _ = export.FORMATS[self.format]
        return writer(data).encode(self.charset)


class ExportJSONRenderer(ExportRenderer):
    format = "json"
    media_type = export.FORMATS[format][1]


class ExportYAMLRenderer(ExportRenderer):
    format = "yaml"
    media_type = export.FORMATS[format][1]


class ExportEnvRenderer(ExportRenderer):
    format = "env"
    media_type = export.FORMATS[format][1]


# The experiment routes that launch and steer its sweeps and read its runs
# (/api/experiments/{id}/sweep/, .../report/, ...), registered under the experiments
# prefix beside experiments.api.ExperimentViewSet; the docstring is the schema's
# description of both.
class ExperimentRunsViewSet(ProjectScopedMixin, viewsets.GenericViewSet):
    """Experiments of your projects: viewers read them, their exports and reports;
    editors change them, their datasets and their sweeps."""

    queryset = Experiment.objects.select_related("created_by")
    serializer_class = ExperimentSerializer

    # -- sweeps ---------------------------------------------------------------------
    @extend_schema(
        request=SweepLaunchSerializer,
        responses={
            201: SweepSerializer,
            200: SweepEstimateSerializer,
            409: OpenApiResponse(description="A sweep is active."),
        },
    )
    @action(detail=True, methods=["post"])
    def sweep(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        launch = SweepLaunchSerializer(data=request.data, context={"experiment": experiment})
        launch.is_valid(raise_exception=True)
        sweep_request = launch.validated_data["request"]
        if launch.validated_data["dry_run"]:
            data = estimate_response(launch.validated_data["plan"], sweep_request)
            return Response(SweepEstimateSerializer(data).data)
        try:
            sweep = launch_sweep(experiment, sweep_request, request.user, launch.validated_data["plan"])
        except SweepRequestError as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from None
        except SweepStateError as exc:
            raise Conflict(str(exc)) from None
        return Response(SweepSerializer(sweep).data, status=status.HTTP_201_CREATED)

    def _steer(self, change: Callable[[Sweep], None]) -> Response:
        sweep = self.get_object().active_sweep()
        if sweep is None:
            raise Conflict("This experiment has no active sweep.")
        try:
            change(sweep)
        except SweepStateError as exc:
            raise Conflict(str(exc)) from None
        return Response(SweepSerializer(sweep).data)

    @extend_schema(request=None, responses=SweepSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        return self._steer(Sweep.pause)

    @extend_schema(request=None, responses=SweepSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        return self._steer(Sweep.resume)

    @extend_schema(request=None, responses=SweepSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        return self._steer(Sweep.stop)

    # -- results --------------------------------------------------------------------
    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=["json", "env", "yaml"], description="Default json.")
        ],
        responses={
            (200, "application/json"): ExportedConfigSerializer,
            (200, "application/yaml"): ExportedConfigSerializer,
            (200, "text/plain"): OpenApiTypes.STR,
        },
        description="The best configuration (each stage's model, parameters and templates with the "
        "config applied) and its metadata, as a download.",
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="export",
        renderer_classes=[ExportJSONRenderer, ExportYAMLRenderer, ExportEnvRenderer],
    )
    def export_config(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        best = export.best_run(experiment)
        if best is None:
            raise NotFound("No completed, scored run yet: run a sweep first.")
        fmt = request.accepted_renderer.format
        headers = {"Content-Disposition": f'attachment; filename="{export.export_filename(best, fmt)}"'}
        try:
            data = export.exported_config(best)
        except RunFailure as exc:  # the experiment changed since that run
            raise Conflict(f"Run {best.pk} no longer fits this experiment: {exc}") from None
        return Response(data, headers=headers)

    @extend_schema(
        responses={(200, "text/markdown"): OpenApiTypes.STR, (200, "application/json"): ReportSerializer},
        description="Markdown: the configuration space explored, the top 5 configurations, score "
        "distributions, token usage and timing. `Accept: application/json` gives {markdown}.",
    )
    @action(detail=True, methods=["get"], renderer_classes=[MarkdownRenderer, renderers.JSONRenderer])
    def report(self, request: Request, pk: str | None = None) -> Response:
        markdown = report_markdown(self.get_object())
        if request.accepted_renderer.format == "json":
            return Response({"markdown": markdown})
        return Response(markdown)

    @extend_schema(
        responses=JudgeAgreementSerializer,
        description="Per LLM judge scorer: the endpoint and model that judge (and whether that model "
        "wrote outputs it rates), outputs it could not rate, its rating spread, and its agreement "
        "with human ratings of the same outputs: pairs, Spearman rank correlation, mean absolute "
        "difference on the 1-10 scale and a verdict.",
    )
    @action(detail=True, methods=["get"], url_path="judge-agreement")
    def judge_agreement(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        data = {"experiment": experiment.pk, "judges": judges(experiment)}
        return Response(JudgeAgreementSerializer(data).data)


# -- the response cache -------------------------------------------------------------
class CacheViewSet(viewsets.ViewSet):
    @extend_schema(parameters=[CacheStatsQuerySerializer], responses=CacheStatsSerializer)
    @action(detail=False, methods=["get"])
    def stats(self, request: Request) -> Response:
        """Figures of the answers your projects' calls cached (or of `?project=` alone)."""
        params = query(CacheStatsQuerySerializer, request)
        projects = visible(Project.objects.all(), request.user)
        if "project" in params:
            projects = [get_for_user(projects, request.user, pk=params["project"]).pk]
        else:
            projects = projects.values("pk")
        return Response(CacheStatsSerializer(cache_table_stats(projects)).data)
