import json
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import parsers, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from experiments import definition
from experiments.dataset_import import DatasetImportError, read_dataset, write_rows
from experiments.models import Experiment, ExperimentFrozen
from experiments.promptfoo import import_promptfoo
from experiments.serializers import (
    DatasetImportResultSerializer,
    DatasetImportSerializer,
    DatasetUploadSerializer,
    ExperimentSerializer,
    ExperimentSummarySerializer,
)
from projects.access import get_for_user, visible
from projects.api import Conflict, ProjectScopedMixin
from projects.models import Project, Role


class RawBodyParser(parsers.BaseParser):
    """Any other content type: the body as bytes (a CSV or JSONL file sent as is)."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> bytes:
        return stream.read() if stream is not None else b""


class DefinitionRenderer(renderers.BaseRenderer):
    """An experiment definition file (and an error as the same format)."""

    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return definition.dump(json.loads(renderers.JSONRenderer().render(data)), self.format).encode()


class DefinitionYAMLRenderer(DefinitionRenderer):
    format = "yaml"
    media_type = "application/yaml"


class DefinitionJSONRenderer(DefinitionRenderer):
    format = "json"
    media_type = "application/json"


class PromptfooRenderer(renderers.JSONRenderer):
    """`?format=promptfoo` chooses what the import reads; the answer is JSON either way."""

    format = "promptfoo"


def import_project(request: Request) -> Project:
    """`?project=`, or the caller's only project; an editor's role there."""
    chosen = request.query_params.get("project")
    if chosen is None:
        mine = list(visible(Project.objects.all(), request.user)[:2])
        if len(mine) != 1:
            raise serializers.ValidationError({"project": ["Say which project: ?project=<id>."]})
        chosen = mine[0].pk
    if not str(chosen).isdigit():
        raise serializers.ValidationError({"project": ["A project id is a number."]})
    return get_for_user(Project, request.user, Role.EDITOR, pk=chosen)


def dataset_upload(request: Request) -> tuple[bytes | str, str, str]:
    """(content, file name, content type) of an uploaded file or a raw body."""
    if isinstance(request.data, bytes):
        return request.data, "", request.content_type or ""
    upload = request.data.get("file")
    if upload is None or isinstance(upload, str):
        raise serializers.ValidationError(
            {"file": ["Send the file as multipart field `file`, or as the raw body."]}
        )
    return upload.read(), upload.name or "", upload.content_type or ""


class ExperimentViewSet(ProjectScopedMixin, viewsets.ModelViewSet):
    """Experiments of your projects: viewers read them, their exports and reports;
    editors change them, their datasets and their sweeps."""

    queryset = Experiment.objects.select_related("created_by")
    serializer_class = ExperimentSerializer

    def get_queryset(self) -> QuerySet[Experiment]:
        experiments = super().get_queryset()
        if self.action == "list":
            return experiments.annotate(dataset_size=Count("items")).order_by("-updated_at", "-id")
        if self.action in ("retrieve", "update", "partial_update"):
            return experiments.prefetch_related("items")
        return experiments

    def get_serializer_class(self) -> type:
        return ExperimentSummarySerializer if self.action == "list" else ExperimentSerializer

    def perform_create(self, serializer: ExperimentSerializer) -> None:
        serializer.save(created_by=self.request.user)

    def perform_update(self, serializer: ExperimentSerializer) -> None:
        experiment = serializer.instance
        try:
            experiment.check_changeable(experiment.changed_sweep_inputs(serializer.validated_data))
        except ExperimentFrozen as exc:
            raise Conflict(str(exc)) from None
        serializer.save()

    def perform_destroy(self, instance: Experiment) -> None:
        if instance.active_sweep():
            raise Conflict("A sweep is running on this experiment; stop it before deleting the experiment.")
        instance.delete()

    # -- the dataset ----------------------------------------------------------------
    @extend_schema(
        request={"multipart/form-data": DatasetUploadSerializer, "text/plain": OpenApiTypes.STR},
        parameters=[DatasetImportSerializer],
        responses=DatasetImportResultSerializer,
        description="Import CSV (a `reference` column; the others become input variables) or JSONL "
        "(`{input: {...}, reference}` or flat objects with a `reference` key), as multipart field "
        "`file` or as the raw body. A bad row is a 400 naming its line; nothing is changed then.",
    )
    @action(detail=True, methods=["post"], parser_classes=[parsers.MultiPartParser, RawBodyParser])
    def dataset(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        form = request.data if not isinstance(request.data, bytes) else {}
        options = DatasetImportSerializer(data={**form_options(form), **request.query_params.dict()})
        options.is_valid(raise_exception=True)
        content, name, content_type = dataset_upload(request)
        try:
            rows, fmt = read_dataset(content, name, content_type, options.validated_data.get("file_format"))
        except DatasetImportError as exc:
            raise serializers.ValidationError({"dataset": [str(exc)]}) from None
        try:
            experiment.check_changeable(["its dataset"])
        except ExperimentFrozen as exc:
            raise Conflict(str(exc)) from None
        mode = options.validated_data["mode"]
        try:
            experiment.check_dataset({name for row in rows for name in row["input"]}, mode)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(
                {"dataset": [m for ms in exc.message_dict.values() for m in ms]}
            ) from None
        size = write_rows(experiment, rows, mode)
        result = {"imported": len(rows), "dataset_size": size, "mode": mode, "file_format": fmt}
        return Response(DatasetImportResultSerializer(result).data)

    # -- experiments as code ----------------------------------------------------------
    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["yaml", "json"], description="Default yaml.")],
        responses={
            (200, "application/yaml"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
        description="The experiment as a definition file: name, description, endpoint, pipeline, "
        "dataset, parameter space, scorers and sweep defaults. Importing it gives the same experiment.",
    )
    @action(detail=True, methods=["get"], renderer_classes=[DefinitionYAMLRenderer, DefinitionJSONRenderer])
    def definition(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        fmt = request.accepted_renderer.format
        filename = definition.filename_of(experiment, fmt)
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        return Response(definition.definition_of(experiment), headers=headers)

    @extend_schema(
        request={"application/yaml": OpenApiTypes.STR, "application/json": OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter("project", int, description="Default: your only project."),
            OpenApiParameter("format", str, enum=["promptfoo"], description="A promptfoo config."),
            OpenApiParameter("update", bool, description="Replace the experiment of that name."),
        ],
        responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT},
        description="Create an experiment from a definition file (the raw body, YAML or JSON), or "
        "from a promptfoo config with ?format=promptfoo. `unmapped` lists what could not be imported, "
        "with its location. A bad file is a 400 naming the line and the field.",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        url_name="import",
        parser_classes=[RawBodyParser],
        renderer_classes=[renderers.JSONRenderer, PromptfooRenderer],
    )
    def import_(self, request: Request) -> Response:
        project = import_project(request)
        update = request.query_params.get("update", "").lower() in ("1", "true", "yes")
        text = request.data.decode("utf-8", errors="replace") if isinstance(request.data, bytes) else ""
        try:
            if request.accepted_renderer.format == "promptfoo":
                may_create = Role(project.member_role).allows(Role.ADMIN)
                imported = import_promptfoo(
                    text, project, request.user, update=update, create_endpoints=may_create
                )
            else:
                source = definition.load_definition(text, "request body")
                imported = definition.import_definition(source, project, request.user, update)
        except definition.DefinitionError as exc:
            raise serializers.ValidationError(exc.as_dict()) from None
        except definition.DefinitionConflict as exc:
            raise Conflict(str(exc)) from None
        body = {
            "id": imported.experiment.pk,
            "name": imported.experiment.name,
            "created": imported.created,
            "unmapped": imported.notes,
        }
        return Response(body, status=status.HTTP_201_CREATED if imported.created else status.HTTP_200_OK)


def form_options(form: Any) -> dict[str, str]:
    return {key: form.get(key) for key in ("mode", "file_format") if hasattr(form, "get") and form.get(key)}
