"""Experiments over the API. The pipeline, parameter space and scorers are checked
by experiments/validation.py, the same checks the UI forms and the model use,
so a 400 names the field and says what is wrong in the same words everywhere."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from endpoints.models import Endpoint
from experiments.dataset_import import FORMATS, MODES, has_nul, write_rows
from experiments.models import Experiment
from experiments.validation import extra_params_for, validate_experiment
from projects.serializers import ProjectOwnedSerializer

SPACE_VALUES = {
    "oneOf": [
        {"type": "array", "items": {}, "minItems": 1},
        {
            "type": "object",
            "properties": {
                "min": {"type": "number"},
                "max": {"type": "number"},
                "log": {"type": "boolean"},
                "type": {"type": "string", "enum": ["int", "float"]},
            },
            "required": ["min", "max"],
        },
    ]
}


class JSONValueField(serializers.JSONField):
    """Any JSON, minus NUL characters (PostgreSQL cannot store them)."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if has_nul(value):
            raise serializers.ValidationError("Text here may not contain NUL characters.")
        return value


class StageSerializer(serializers.Serializer):
    """The shape of one pipeline stage (documentation; validation.py checks it)."""

    name = serializers.CharField(help_text="Unique in the pipeline, without dots.")
    system = serializers.CharField(required=False, allow_blank=True, help_text="Jinja2 template.")
    user = serializers.CharField(help_text="Jinja2 template; `{{ previous }}` is the stage before's output.")
    model = serializers.CharField(required=False, allow_blank=True)
    params = serializers.DictField(required=False, help_text="LLM parameters, e.g. temperature.")


class ScorerSpecSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="keyword, format, embedding, llm_judge, human, ...")
    weight = serializers.FloatField(required=False, default=1.0, min_value=0)
    config = serializers.DictField(required=False)
    name = serializers.CharField(
        required=False, help_text="Defaults to the type; needed to use a type twice."
    )


@extend_schema_field(StageSerializer(many=True))
class PipelineField(JSONValueField):
    pass


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": SPACE_VALUES,
        "description": '{param: [values] | {min, max, log?, type?}}; "<stage>.<param>" and '
        '"<stage>.user" / "<stage>.system" (template variants) allowed.',
    }
)
class ParameterSpaceField(JSONValueField):
    pass


@extend_schema_field(ScorerSpecSerializer(many=True))
class ScorersField(JSONValueField):
    pass


class DatasetRowSerializer(serializers.Serializer):
    input = serializers.DictField(help_text="Template variables of this row.")
    reference = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False, help_text="The expected answer."
    )

    def validate_input(self, value: dict) -> dict:
        if has_nul(value):
            raise serializers.ValidationError("Text here may not contain NUL characters.")
        return value


class ExperimentSerializer(ProjectOwnedSerializer):
    """Writing `dataset` replaces the experiment's rows; leaving it out keeps them.
    The endpoint must be one of the experiment's own project."""

    endpoint = serializers.PrimaryKeyRelatedField(
        queryset=Endpoint.objects.none(), allow_null=True, required=False
    )
    pipeline = PipelineField()
    parameter_space = ParameterSpaceField(required=False)
    scorers = ScorersField(required=False)
    dataset = DatasetRowSerializer(many=True, required=False, source="items")
    dataset_size = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Experiment
        fields = [
            "id",
            "project",
            "name",
            "description",
            "endpoint",
            "pipeline",
            "parameter_space",
            "scorers",
            "dataset",
            "dataset_size",
            "created_by",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(OpenApiTypes.INT)
    def get_dataset_size(self, experiment: Experiment) -> int:
        annotated = getattr(experiment, "dataset_size", None)
        return annotated if annotated is not None else experiment.items.count()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].queryset = Endpoint.objects.filter(project__in=self.my_projects())

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        current, project = self.instance, self.target_project(attrs)
        endpoint = attrs.get("endpoint")
        if endpoint is not None and project is not None and endpoint.project_id != project.pk:
            raise serializers.ValidationError(
                {
                    "endpoint": [
                        f"Endpoint '{endpoint.name}' belongs to another project; use one of this project's."
                    ]
                }
            )
        space = attrs.get("parameter_space", current.parameter_space if current else {})
        checked = (
            attrs.get("pipeline", current.pipeline if current else []),
            space,
            attrs.get("scorers", current.scorers if current else []),
            self.columns(attrs),
        )
        chosen = attrs["endpoint"] if "endpoint" in attrs else (current.endpoint if current else None)
        project_id = project.pk if project is not None else None
        try:  # extra_params_for() also refuses an endpoint name the project lacks
            validate_experiment(
                *checked, extra_params=extra_params_for(project_id, chosen, space, checked[2])
            )
        except DjangoValidationError as exc:
            if current is not None and chosen != current.endpoint:
                self.refuse_endpoint_change(checked, chosen, project_id, current.endpoint, exc)
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    @staticmethod
    def refuse_endpoint_change(
        checked: tuple,
        endpoint: Endpoint | None,
        project_id: int | None,
        previous: Endpoint | None,
        error: DjangoValidationError,
    ) -> None:
        """A parameter that only the previous endpoint took: the endpoint change is the mistake."""
        try:
            before = extra_params_for(project_id, previous, checked[1], checked[2])
            validate_experiment(*checked, extra_params=before)
        except DjangoValidationError:
            return  # wrong with either endpoint: report it where it is
        name = f"Endpoint '{endpoint.name}'" if endpoint else "Without an endpoint, the experiment"
        found = next(iter(error.messages), "")
        raise serializers.ValidationError(
            {
                "endpoint": [
                    f"{name} does not take a parameter this experiment sets, which the previous "
                    f"endpoint listed among its extra parameters: {found} Add it to this endpoint's "
                    "extra parameters, or remove it from the experiment first."
                ]
            }
        )

    def columns(self, attrs: dict) -> set[str] | None:
        """The dataset the templates will read: the rows sent along, else the stored ones."""
        if attrs.get("items"):
            return {name for row in attrs["items"] for name in row["input"]}
        return self.instance.dataset_columns() if self.instance else None

    def create(self, validated_data: dict) -> Experiment:
        rows = validated_data.pop("items", None)
        with transaction.atomic():
            experiment = Experiment.objects.create(**validated_data)
            if rows is not None:
                write_rows(experiment, rows)
        return experiment

    def update(self, instance: Experiment, validated_data: dict) -> Experiment:
        rows = validated_data.pop("items", None)
        with transaction.atomic():
            for name, value in validated_data.items():
                setattr(instance, name, value)
            instance.save()
            if rows is not None:
                write_rows(instance, rows)
        return instance


class ExperimentSummarySerializer(ExperimentSerializer):
    """The list view: everything but the dataset rows."""

    class Meta(ExperimentSerializer.Meta):
        fields = [f for f in ExperimentSerializer.Meta.fields if f != "dataset"]


class DatasetImportSerializer(serializers.Serializer):
    """Query parameters (or form fields) of a dataset import."""

    mode = serializers.ChoiceField(
        choices=MODES, default="append", help_text="append after the existing rows, or replace them"
    )
    # Not `format`: DRF reads ?format= to choose how to render the response.
    file_format = serializers.ChoiceField(
        choices=FORMATS,
        required=False,
        help_text="Default: from the file name, content type or first character.",
    )


class DatasetUploadSerializer(DatasetImportSerializer):
    file = serializers.FileField(help_text="A CSV file with a header row, or JSONL (one object a line).")


class DatasetImportResultSerializer(serializers.Serializer):
    imported = serializers.IntegerField()
    dataset_size = serializers.IntegerField()
    mode = serializers.ChoiceField(choices=MODES)
    file_format = serializers.ChoiceField(choices=FORMATS)


class ReportSerializer(serializers.Serializer):
    markdown = serializers.CharField()


class ExportMetadataSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    experiment_id = serializers.IntegerField()
    run_id = serializers.IntegerField()
    sweep_id = serializers.IntegerField(allow_null=True)
    config_hash = serializers.CharField()
    weighted_score = serializers.FloatField(allow_null=True)
    exported_at = serializers.DateTimeField()


class ExportedStageSerializer(serializers.Serializer):
    name = serializers.CharField()
    model = serializers.CharField()
    params = serializers.DictField()
    system = serializers.CharField(allow_blank=True)
    user = serializers.CharField()


class ExportedConfigSerializer(serializers.Serializer):
    """The JSON and YAML exports (the .env export flattens the same fields)."""

    metadata = ExportMetadataSerializer()
    config = serializers.DictField(help_text="The parameters as the sweep set them.")
    stages = ExportedStageSerializer(many=True, help_text="Each stage with the config applied.")


class AgreementSerializer(serializers.Serializer):
    pairs = serializers.IntegerField(help_text="Outputs rated by both the judge and people.")
    spearman = serializers.FloatField(
        allow_null=True, help_text="Rank correlation (ties get average ranks); null when undefined."
    )
    mean_abs_diff = serializers.FloatField(
        allow_null=True, help_text="Mean |judge - people| on the 1-10 scale."
    )
    verdict = serializers.CharField(help_text='e.g. "agrees well", "weak", "too few ratings: 7 < 20".')


class JudgeSerializer(serializers.Serializer):
    scorer = serializers.CharField()
    endpoint = serializers.CharField(allow_null=True, help_text="The endpoint that judges.")
    model = serializers.CharField(help_text="The model that judges; empty when none is set.")
    samples = serializers.IntegerField(help_text="Times the judge is asked per output.")
    self_judging = serializers.BooleanField(help_text="The judge's model also wrote outputs it rates.")
    warning = serializers.CharField(allow_blank=True)
    rated = serializers.IntegerField(help_text="Outputs rated, over all runs.")
    could_not_rate = serializers.IntegerField(help_text="Outputs the judge gave no usable rating.")
    mean_spread = serializers.FloatField(
        allow_null=True, help_text="Std of the ratings over samples, mean over outputs (1-10 points)."
    )
    agreement = AgreementSerializer()


class JudgeAgreementSerializer(serializers.Serializer):
    experiment = serializers.IntegerField()
    judges = JudgeSerializer(many=True)
