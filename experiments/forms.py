"""Forms of the experiment editor and the dataset pages.

Every check is experiments/validation.py's (the API uses the same), called per
stage, parameter and scorer so that an error is shown where it was made.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from endpoints.models import Endpoint
from engine.scorers import SCORERS
from engine.templates import template_variables
from engine.types import EngineError
from experiments.dataset_import import (
    DatasetImportError,
    has_nul,
    read_dataset,
)
from experiments.models import DatasetItem, Experiment
from experiments.validation import (
    check_template,
    validate_parameter_space,
    validate_pipeline,
    validate_scorers,
)

VARIANT_SEPARATOR = "---"
TEMPLATE_KEYS = (".user", ".system")
BUILTIN_VARIABLES = ("previous", "stages")
NUL_MESSAGE = "Text here may not contain NUL characters."


def code_area(rows: int = 4, **attrs: Any) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "class": "code", "spellcheck": "false", **attrs})


def model_field(name: str, **kwargs: Any) -> forms.Field:
    return Experiment._meta.get_field(name).formfield(**kwargs)


class ExperimentForm(forms.Form):
    """The model's own fields. Not a ModelForm: that would run Experiment.clean()
    on the pipeline before the editor has put the edited one in place."""

    name = model_field("name")
    description = model_field("description", widget=forms.Textarea(attrs={"rows": 2}))
    endpoint = model_field(
        "endpoint", help_text="The server every stage calls unless the parameter space says otherwise."
    )


# -- stages ------------------------------------------------------------------
class StageForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Letters, digits and _ ; no dots.")
    system = forms.CharField(
        label="System template", required=False, strip=False, widget=code_area(3, **{"data-template": ""})
    )
    user = forms.CharField(label="User template", strip=False, widget=code_area(5, **{"data-template": ""}))
    model = forms.CharField(max_length=200, required=False, help_text="Blank: the endpoint's default.")
    params = forms.JSONField(
        label="Call parameters",
        required=False,
        initial=dict,
        widget=code_area(1),
        help_text='JSON, e.g. {"max_tokens": 64}.',
    )

    def clean(self) -> dict:
        data = super().clean()
        name = (data.get("name") or "").strip()
        for field in ("system", "user"):
            if field in data:
                try:
                    check_template(data[field], f"Stage '{name}' {field} template", field)
                except ValidationError as exc:
                    self.add_error(None, exc)
        if data.get("params") in (None, ""):
            data["params"] = {}
        elif not isinstance(data["params"], dict):
            self.add_error("params", 'Give the call parameters as a JSON object, e.g. {"max_tokens": 64}.')
        elif has_nul(data["params"]):
            self.add_error("params", NUL_MESSAGE)
        return data

    def as_stage(self) -> dict:
        data = self.cleaned_data
        stage = {"name": data["name"].strip(), "system": data.get("system") or "", "user": data["user"]}
        if data.get("model"):
            stage["model"] = data["model"]
        if data.get("params"):
            stage["params"] = data["params"]
        return stage


class LabelledFormSet(forms.BaseFormSet):
    remove_label = "Remove"

    def add_fields(self, form: forms.Form, index: int | None) -> None:
        super().add_fields(form, index)
        if "DELETE" in form.fields:
            form.fields["DELETE"].label = self.remove_label
        if "ORDER" in form.fields:
            form.fields["ORDER"].label = "Position"


class BaseStageFormSet(LabelledFormSet):
    remove_label = "Remove this stage"
    extra_params: frozenset[str] = frozenset()

    def pipeline(self) -> list[dict]:
        return [form.as_stage() for form in self.ordered_forms if form.cleaned_data]

    def clean(self) -> None:
        if any(self.errors) or self.non_form_errors():  # e.g. a post without the management form
            return
        try:
            validate_pipeline(self.pipeline(), self.extra_params)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["pipeline"]) from None


StageFormSet = forms.formset_factory(
    StageForm, formset=BaseStageFormSet, extra=0, can_order=True, can_delete=True, min_num=1
)


# -- parameter space ------------------------------------------------------------
def parse_values(key: str, text: str) -> list | dict:
    """`a, b, 3` → ["a", "b", 3]; JSON lists and ranges as they are; prompt
    variants (`<stage>.user`) are separated by a line holding only ---."""
    text = text.strip()
    if key.endswith(TEMPLATE_KEYS):
        parts, current = [], []
        for line in text.splitlines():
            if line.strip() == VARIANT_SEPARATOR:
                parts.append("\n".join(current).strip())
                current = []
            else:
                current.append(line)
        parts.append("\n".join(current).strip())
        return [p for p in parts if p]
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"'{key}': not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    return [scalar(part.strip()) for part in text.split(",") if part.strip()]


def scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


def format_values(key: str, values: Any) -> str:
    if key.endswith(TEMPLATE_KEYS) and isinstance(values, list):
        return f"\n{VARIANT_SEPARATOR}\n".join(str(v) for v in values)
    if not isinstance(values, list):
        return json.dumps(values)
    plain = [json.dumps(v) if not isinstance(v, str) else v for v in values]
    if all(parse_values(key, p) == [v] for p, v in zip(plain, values, strict=True)):
        return ", ".join(plain)
    return json.dumps(values)


class ParameterForm(forms.Form):
    key = forms.CharField(
        label="Parameter",
        max_length=200,
        help_text="e.g. temperature, answer.max_tokens, or answer.user for prompt variants.",
    )
    values = forms.CharField(
        widget=code_area(3),
        help_text='Comma-separated values, a JSON list, a range like {"min": 0, "max": 1}; '
        "prompt variants one after another, separated by a line with only ---.",
    )

    def clean(self) -> dict:
        data = super().clean()
        if "key" in data and "values" in data:
            try:
                data["parsed"] = parse_values(data["key"].strip(), data["values"])
            except ValidationError as exc:
                self.add_error("values", exc)
            else:
                if has_nul(data["parsed"]):
                    self.add_error("values", NUL_MESSAGE)
        return data


class BaseParameterFormSet(LabelledFormSet):
    stage_names: set[str] = set()
    extra_params: frozenset[str] = frozenset()

    def space(self) -> dict:
        rows = [f.cleaned_data for f in self.forms if f.cleaned_data and not self._should_delete_form(f)]
        return {row["key"].strip(): row["parsed"] for row in rows if "parsed" in row}

    def clean(self) -> None:
        if any(self.errors):
            return
        keys = [
            f.cleaned_data["key"].strip()
            for f in self.forms
            if f.cleaned_data and not self._should_delete_form(f)
        ]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValidationError(f"Parameter {', '.join(repeated)} is listed twice; merge the values.")
        try:
            validate_parameter_space(self.space(), self.stage_names, self.extra_params)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["parameter_space"]) from None


ParameterFormSet = forms.formset_factory(
    ParameterForm, formset=BaseParameterFormSet, extra=0, can_delete=True
)


# -- scorers ------------------------------------------------------------------------
def scorer_choices() -> list[tuple[str, str]]:
    return [
        (name, f"{name} (costs tokens)" if cls.spends_tokens({}) else name)
        for name, cls in sorted(SCORERS.items())
    ]


class ScorerForm(forms.Form):
    type = forms.ChoiceField(choices=scorer_choices)
    name = forms.CharField(max_length=100, required=False, help_text="Needed when two scorers share a type.")
    weight = forms.FloatField(min_value=0, initial=1.0)
    config = forms.JSONField(
        required=False, initial=dict, widget=code_area(2), help_text="Options as a JSON object."
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("config") in (None, ""):
            data["config"] = {}
        if has_nul(data.get("config")):
            self.add_error("config", NUL_MESSAGE)
            return data
        if "type" in data and "weight" in data and "config" in data:
            try:
                validate_scorers([self.as_scorer(data)])
            except ValidationError as exc:
                self.add_error("config", exc.message_dict["scorers"])
        return data

    @staticmethod
    def as_scorer(data: dict) -> dict:
        scorer = {"type": data["type"], "weight": data["weight"], "config": data.get("config") or {}}
        if (data.get("name") or "").strip():
            scorer["name"] = data["name"].strip()
        return scorer


class BaseScorerFormSet(LabelledFormSet):
    def scorers(self) -> list[dict]:
        forms_ = [f for f in self.forms if f.cleaned_data and not self._should_delete_form(f)]
        return [ScorerForm.as_scorer(f.cleaned_data) for f in forms_]

    def clean(self) -> None:
        if any(self.errors):
            return
        try:
            validate_scorers(self.scorers())
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["scorers"]) from None


ScorerFormSet = forms.formset_factory(ScorerForm, formset=BaseScorerFormSet, extra=0, can_delete=True)


class ExperimentEditor:
    """The experiment form and its three formsets, validated and saved together."""

    def __init__(self, instance: Experiment, data: dict | None = None):
        self.instance = instance
        initial = {
            "name": instance.name,
            "description": instance.description,
            "endpoint": instance.endpoint_id,
        }
        self.form = ExperimentForm(data, initial=initial)
        # Only the experiment's own project's endpoints can be chosen.
        self.form.fields["endpoint"].queryset = Endpoint.objects.filter(project_id=instance.project_id)
        self.stages = StageFormSet(data, initial=instance.pipeline or None, prefix="stages")
        self.parameters = ParameterFormSet(
            data, initial=space_initial(instance.parameter_space), prefix="params"
        )
        self.scorers = ScorerFormSet(data, initial=instance.scorers or None, prefix="scorers")

    def is_valid(self) -> bool:
        # Validate everything, so that every mistake is shown at once.
        extras = self.project_extra_params()
        self.stages.extra_params = self.parameters.extra_params = extras
        results = [self.form.is_valid(), self.stages.is_valid()]
        self.parameters.stage_names = self.stage_names()
        results += [self.parameters.is_valid(), self.scorers.is_valid()]
        return all(results)

    def project_extra_params(self) -> frozenset[str]:
        """Any endpoint's extra parameters pass a row's check: the space may send a stage
        to any endpoint. Saving checks them against the endpoints the experiment uses."""
        rows = Endpoint.objects.filter(project_id=self.instance.project_id).values_list(
            "extra_params", flat=True
        )
        return frozenset(name for names in rows for name in names or [])

    def stage_names(self) -> set[str]:
        forms_ = [f for f in self.stages.forms if not self.stages._should_delete_form(f)]
        return {f.cleaned_data["name"].strip() for f in forms_ if f.cleaned_data.get("name")}

    def save(self, user: Any = None) -> Experiment:
        """Raises ValidationError if the model's own check (the same rules) fails, and
        ExperimentFrozen for a change to what a running sweep reads."""
        experiment = self.instance
        changes = {
            **self.form.cleaned_data,
            "pipeline": self.stages.pipeline(),
            "parameter_space": self.parameters.space(),
            "scorers": self.scorers.scorers(),
        }
        if experiment.pk:
            experiment.check_changeable(experiment.changed_sweep_inputs(changes))
        for name, value in changes.items():
            setattr(experiment, name, value)
        if experiment.pk is None and user is not None and user.is_authenticated:
            experiment.created_by = user
        experiment.full_clean()
        experiment.save()
        return experiment


def space_initial(space: dict) -> list[dict]:
    return [{"key": key, "values": format_values(key, values)} for key, values in (space or {}).items()]


def variables_used(source: str) -> list[str]:
    try:
        return sorted(template_variables(source))
    except EngineError:
        return []


# -- dataset ------------------------------------------------------------------------
class DatasetItemForm(forms.ModelForm):
    """One row: a text field per variable the dataset has, plus a new one."""

    new_variable = forms.SlugField(
        required=False, label="Add a variable", help_text="Its name, e.g. country."
    )
    new_value = forms.CharField(required=False, label="Its value", widget=forms.Textarea(attrs={"rows": 1}))

    class Meta:
        model = DatasetItem
        fields = ["reference"]
        widgets = {"reference": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, variables: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.variables = list(variables)
        current = self.instance.input or {}
        fields = {}
        for name in self.variables:
            fields[f"var_{name}"] = forms.CharField(
                label=name,
                required=False,
                strip=False,
                initial=_as_text(current.get(name, "")),
                widget=forms.Textarea(attrs={"rows": 1}),
            )
        self.fields = {**fields, **self.fields}

    def clean(self) -> dict:
        data = super().clean()
        if data.get("new_variable") and data["new_variable"] in self.variables:
            self.add_error("new_variable", "The dataset has that variable already; fill in its field above.")
        return data

    def save(self, commit: bool = True) -> DatasetItem:
        item = super().save(commit=False)
        data = self.cleaned_data
        values = {name: data.get(f"var_{name}", "") for name in self.variables}
        if data.get("new_variable"):
            values[data["new_variable"]] = data.get("new_value", "")
        original = self.instance.input or {}
        # Keep values the user did not touch as they were (numbers, lists); the rest is text.
        item.input = {
            name: original[name] if name in original and _as_text(original[name]) == text else text
            for name, text in values.items()
        }
        if commit:
            item.save()
        return item


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


class DatasetImportForm(forms.Form):
    """Parsing is experiments/dataset_import.py's, the same as the API's."""

    file = forms.FileField(
        help_text="CSV with a header row, or JSON Lines (one object a line). A 'reference' column "
        "holds the expected answer; every other column becomes a template variable."
    )
    mode = forms.ChoiceField(
        choices=[("append", "Append to the current rows"), ("replace", "Replace the current rows")],
        initial="append",
        widget=forms.RadioSelect,
    )

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("file")
        if upload is None:
            return data
        try:
            rows, _ = read_dataset(upload.read(), upload.name or "", upload.content_type or "")
        except DatasetImportError as exc:
            raise ValidationError(str(exc)) from None
        data["rows"] = rows
        return data
