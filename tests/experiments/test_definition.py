"""Definition files: what export writes, import reads back the same; mistakes name file, line and field."""

import json

import pytest

from experiments import definition
from experiments.definition import DefinitionError, definition_of, dump, import_definition, load_definition
from experiments.models import Experiment
from tests.factories import make_endpoint, make_experiment, make_project

pytestmark = pytest.mark.django_db

PIPELINE = [
    {
        "name": "draft",
        "system": "You are terse.\nVery terse.",
        "user": "Capital of {{ country }}?",
        "model": "m1",
    },
    {"name": "polish", "user": "Polish: {{ previous }}", "params": {"max_tokens": 64, "stop": ["\n\n"]}},
]
SPACE = {
    "temperature": {"min": 0.0, "max": 1.0},
    "top_k": {"min": 1, "max": 50, "type": "int", "log": True},
    "draft.user": ["Capital of {{ country }}?", "Name the capital city of {{ country }}: "],
    "provider": [{"endpoint": "local", "model": "a", "seed": 1}, {"endpoint": "judge", "model": "b"}],
}
SCORERS = [
    {"type": "keyword", "weight": 2.0, "config": {"required_present": ["{{ capital }}"], "mode": "all"}},
    {"type": "format", "name": "short", "weight": 0.5, "config": {"check": "length", "max_tokens": 5}},
    {"type": "llm_judge", "name": "judge", "weight": 1, "config": {"endpoint": "judge", "threshold": 0.5}},
]
ROWS = [
    ({"country": "Côte d'Ivoire", "capital": "Yamoussoukro", "n": 3, "tags": ["a", "b"]}, "Yamoussoukro"),
    ({"country": "yes", "capital": "=1+1"}, "line one\nline two  \n"),
    ({"country": "Peru", "capital": "Lima"}, ""),
]
DEFAULTS = {
    "type": "random",
    "n_samples": 12,
    "seed": 7,
    "repeats": 2,
    "max_concurrent": 3,
    "max_tokens": 50_000,
}


def full_experiment(project):
    endpoint = make_endpoint("local", project=project, extra_params=["top_k"])  # a vLLM server
    make_endpoint("judge", project=project)
    return make_experiment(
        endpoint,
        items=ROWS,
        name="Capitals: every field",
        description="Checks the round trip.\nTwo lines.",
        pipeline=PIPELINE,
        parameter_space=SPACE,
        scorers=SCORERS,
        sweep_defaults=DEFAULTS,
        project=project,
    )


def other_project():
    project = make_project("Elsewhere")
    make_endpoint("local", project=project, extra_params=["top_k"])
    make_endpoint("judge", project=project)
    return project


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_then_import_gives_the_same_experiment(fmt):
    original = full_experiment(make_project())
    text = dump(definition_of(original), fmt)
    copy = import_definition(load_definition(text, f"capitals.{fmt}"), other_project()).experiment
    assert definition_of(copy) == definition_of(original)
    for field in ("name", "description", "pipeline", "parameter_space", "scorers", "sweep_defaults"):
        assert getattr(copy, field) == getattr(original, field), field
    assert copy.endpoint.name == "local" and copy.endpoint.project == copy.project
    rows = list(copy.items.order_by("position").values_list("input", "reference"))
    assert rows == [(inp, ref) for inp, ref in ROWS]


def test_prompts_are_written_as_yaml_blocks_when_they_can_be():
    text = dump(definition_of(full_experiment(make_project())), "yaml")
    assert "system: |-\n    You are terse.\n    Very terse." in text
    assert 'reference: "line one\\nline two  \\n"' in text  # trailing spaces stay quoted


def test_importing_again_with_update_replaces_the_experiment_in_place():
    original = full_experiment(make_project())
    data = definition_of(original)
    data.update(description="changed", dataset=[{"input": {"country": "Chile"}, "reference": "Santiago"}])
    imported = import_definition(load_definition(json.dumps(data)), original.project, update=True)
    assert not imported.created and imported.experiment.pk == original.pk
    original.refresh_from_db()
    assert original.description == "changed"
    assert list(original.items.values_list("reference", flat=True)) == ["Santiago"]


def test_importing_a_name_the_project_has_without_update_is_refused():
    original = full_experiment(make_project())
    with pytest.raises(DefinitionError, match="already has an experiment 'Capitals: every field'"):
        import_definition(load_definition(dump(definition_of(original), "yaml")), original.project)


def test_a_dataset_path_is_read_relative_to_the_file(tmp_path):
    project = make_project()
    make_endpoint("local", project=project)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("country,reference\nFrance,Paris\nJapan,Tokyo\n")
    (tmp_path / "exp.yaml").write_text(
        "name: From CSV\nendpoint: local\npipeline:\n  - name: a\n    user: 'Capital of {{ country }}?'\n"
        "dataset: data/rows.csv\n"
    )
    experiment = import_definition(definition.read_file(tmp_path / "exp.yaml"), project).experiment
    assert list(experiment.items.values_list("input", "reference")) == [
        ({"country": "France"}, "Paris"),
        ({"country": "Japan"}, "Tokyo"),
    ]
    (tmp_path / "exp.yaml").write_text("name: JSONL\npipeline: [{name: a, user: hi}]\ndataset: rows.jsonl\n")
    (tmp_path / "rows.jsonl").write_text('{"input": {"q": 1}, "reference": "one"}\n')
    experiment = import_definition(definition.read_file(tmp_path / "exp.yaml"), project).experiment
    assert list(experiment.items.values_list("input", "reference")) == [({"q": 1}, "one")]


YAML_WITH_BAD_SCORER = """\
name: Broken
pipeline:
  - name: a
    user: "Hi {{ name }}"
scorers:
  - type: keyword
    config: {required_present: [x]}
  - type: keyword
    name: second
    config: {required_present: [y], matches: regex}
"""


def test_a_bad_scorer_names_the_file_the_line_and_the_field(tmp_path):
    make_project()
    path = tmp_path / "broken.yaml"
    path.write_text(YAML_WITH_BAD_SCORER)
    with pytest.raises(DefinitionError) as info:
        import_definition(definition.read_file(path), make_project())
    error = info.value
    assert (error.file, error.line, error.field) == (str(path), 8, "scorers")
    assert str(error).startswith(f"{path}:8: scorers: Scorer 2 (keyword)")
    assert "unknown option 'matches'" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("name: x\npipeline: [\n", 3, "", "not valid YAML"),
        ("name: x\npipeline: []\n", 2, "pipeline", "at least one stage"),
        ("name: x\npipeline: [{name: a, user: hi}]\nendpont: local\n", 3, "endpont", "unknown key"),
        (
            "name: x\nendpoint: nowhere\npipeline: [{name: a, user: hi}]\n",
            2,
            "endpoint",
            "no endpoint 'nowhere'",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\nsweep:\n  type: grid\n  seeds: 3\n",
            5,
            "sweep.seeds",
            "unknown",
        ),
        (
            "name: x\npipeline:\n  - {name: a, user: hi}\n  - {name: b, user: '{{ x '}\n",
            4,
            "pipeline",
            "Stage 'b'",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\nparameter_space:\n  temperature: [0.1]\n  p:\n"
            "    - {temperature: 0.2}\n",
            4,
            "parameter_space",
            "set both",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\ndataset:\n  - {input: {a: 1}, answer: 2}\n",
            4,
            "dataset.0",
            "row",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\nparameter_space: {temperature: {min: 0, max: 1}}\nsweep:\n  type: grid\n",
            5,
            "sweep.type",
            "A grid needs lists of values",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\nsweep:\n  type: random\n",
            4,
            "sweep.type",
            "needs n_samples",
        ),
    ],
)
def test_each_mistake_is_located(text, line, field, words):
    with pytest.raises(DefinitionError) as info:
        import_definition(load_definition(text, "exp.yaml"), make_project())
    assert (info.value.line, info.value.field) == (line, field)
    assert words in str(info.value) and str(info.value).startswith(f"exp.yaml:{line}:")


def test_an_inline_definition_cannot_point_at_a_file():
    text = "name: x\npipeline: [{name: a, user: hi}]\ndataset: rows.csv\n"
    with pytest.raises(DefinitionError, match="a file path needs a definition read from a file"):
        import_definition(load_definition(text, "request body"), make_project())
    assert not Experiment.objects.filter(name="x").exists()


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (
            "name: x\npipeline: [{name: a, user: hi}]\nparameter_space:\n  temprature: [0.1]\n",
            4,
            "parameter_space",
            "unknown parameter 'temprature' — did you mean temperature?",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\nparameter_space:\n  top_p: {min: 0, max: 1.5}\n",
            4,
            "parameter_space",
            "'top_p' range max 1.5",
        ),
        (
            "name: x\npipeline:\n  - {name: a, user: hi}\n  - {name: b, user: hi, params: {n: 4}}\n",
            4,
            "pipeline",
            "Stage 'b' params: 'n' must be 1",
        ),
    ],
)
def test_a_parameter_mistake_is_located(text, line, field, words):
    with pytest.raises(DefinitionError) as info:
        import_definition(load_definition(text, "exp.yaml"), make_project())
    assert (info.value.line, info.value.field) == (line, field)
    assert words in str(info.value) and str(info.value).startswith(f"exp.yaml:{line}:")


def test_a_server_parameter_imports_only_onto_an_endpoint_that_lists_it():
    text = "name: x\nendpoint: local\npipeline: [{name: a, user: hi, params: {min_p: 0.05}}]\n"
    project = make_project()
    endpoint = make_endpoint("local", project=project)
    with pytest.raises(DefinitionError, match="unknown parameter 'min_p'"):
        import_definition(load_definition(text, "exp.yaml"), project)
    endpoint.extra_params = ["min_p"]
    endpoint.save()
    imported = import_definition(load_definition(text, "exp.yaml"), project).experiment
    assert imported.pipeline[0]["params"] == {"min_p": 0.05}


ONE_STAGE = "name: x\npipeline: [{name: a, user: 'Say {{ question }}'}]\n"
ROW = "dataset:\n  - {input: {question: hi}}\n"
MAX_SEED = 2**32 - 1


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (
            ONE_STAGE + "dataset:\n  - {input: {query: hi}}\n",
            2,
            "pipeline",
            "Stage 'a' user template uses {{ question }}, which no dataset column",
        ),
        ("name: " + "n" * 201 + "\npipeline: [{name: a, user: hi}]\n", 1, "name", "at most 200 characters"),
        (ONE_STAGE + ROW + "sweep: {type: random, n_samples: 0}\n", 5, "sweep.n_samples", "1 or more, not 0"),
        (ONE_STAGE + ROW + "sweep: {repeats: 0}\n", 5, "sweep.repeats", "from 1 to 100, not 0"),
        (ONE_STAGE + ROW + "sweep: {repeats: 101}\n", 5, "sweep.repeats", "from 1 to 100, not 101"),
        (ONE_STAGE + ROW + "sweep: {max_concurrent: 0}\n", 5, "sweep.max_concurrent", "from 1 to 1,000"),
        (ONE_STAGE + ROW + "sweep: {max_concurrent: 1001}\n", 5, "sweep.max_concurrent", "not 1,001"),
        (ONE_STAGE + ROW + "sweep: {max_tokens: 0}\n", 5, "sweep.max_tokens", "from 1 to"),
        (ONE_STAGE + ROW + f"sweep: {{seed: {MAX_SEED + 1}}}\n", 5, "sweep.seed", f"to {MAX_SEED:,}"),
        (ONE_STAGE + "dataset:\n  - {input: {question: .nan}}\n", 4, "dataset.0", "nan is not a JSON number"),
        (ONE_STAGE + "dataset:\n  - {input: {question: 2024-05-01}}\n", 4, "dataset.0", "not a JSON value"),
        (
            ONE_STAGE + "dataset:\n  - {input: {question: " + "[" * 40 + "]" * 40 + "}}\n",
            4,
            "dataset.0",
            "nested",
        ),
        (
            ONE_STAGE + "dataset:\n  - {input: {question: hi}, reference: {a: 1}}\n",
            4,
            "dataset.0.reference",
            "reference must be text",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\nparameter_space:\n  model: [.nan]\n",
            3,
            "parameter_space",
            "nan is not a JSON number",
        ),
        (
            "name: x\npipeline: [{name: a, user: hi}]\nscorers:\n"
            "  - {type: format, config: {check: structure, schema: {a: .inf}}}\n",
            3,
            "scorers",
            "inf is not a JSON number",
        ),
    ],
)
def test_what_the_api_refuses_the_import_refuses_too(text, line, field, words):
    with pytest.raises(DefinitionError) as info:
        import_definition(load_definition(text, "exp.yaml"), make_project())
    assert (info.value.line, info.value.field) == (line, field), str(info.value)
    assert words in str(info.value) and str(info.value).startswith(f"exp.yaml:{line}:")
    assert not Experiment.objects.exists()


def test_an_inline_dataset_over_the_import_limit_is_refused():
    rows = ", ".join(["{input: {question: hi}}"] * 10_001)
    with pytest.raises(
        DefinitionError, match=r"exp.yaml:3: dataset: The dataset has 10,001 rows; at most 10,000"
    ):
        import_definition(load_definition(ONE_STAGE + f"dataset: [{rows}]\n", "exp.yaml"), make_project())


def test_an_update_without_a_dataset_is_checked_against_the_rows_it_keeps():
    project = make_project()
    import_definition(load_definition(ONE_STAGE + ROW, "exp.yaml"), project)
    changed = "name: x\npipeline: [{name: a, user: 'Say {{ topic }}'}]\n"
    with pytest.raises(
        DefinitionError, match=r"exp.yaml:2: pipeline: Stage 'a' user template uses \{\{ topic \}\}"
    ):
        import_definition(load_definition(changed, "exp.yaml"), project, update=True)
    kept = "name: x\npipeline: [{name: a, user: 'Ask {{ question }}'}]\n"
    assert import_definition(load_definition(kept, "exp.yaml"), project, update=True).created is False
    assert Experiment.objects.get().pipeline[0]["user"] == "Ask {{ question }}"
