"""promptfoo configs, written in the shapes promptfoo documents, imported and then swept
against the loopback stub: prompts become variants, providers linked bundles on
endpoints matched by base URL, tests dataset rows, assertions scorers; what does not
map is listed with its location."""

import json
import re

import pytest

from endpoints.models import Endpoint
from experiments.definition import DefinitionError
from experiments.promptfoo import import_promptfoo
from runs.export import exported_config
from runs.leaderboard import leaderboard
from runs.models import Run, RunStatus, Score
from runs.sweeps import SweepRequest, launch_sweep
from tests.factories import make_endpoint, make_project
from tests.runs.sweep_helpers import wait_for_sweep

pytestmark = pytest.mark.django_db(transaction=True)

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima", "Chile": "Santiago"}


def answers(body: dict) -> str:
    """The strong model knows capitals (as JSON when asked); the weak one does not; judges say 9."""
    content = body["messages"][-1]["content"]
    if content.startswith("Grade the answer"):
        return "9"
    if body["model"] == "weak":
        return "I do not know."
    capital = next((c for country, c in CAPITALS.items() if country in content), "Nowhere")
    return json.dumps({"capital": capital}) if "JSON" in content else f"The capital is {capital}."


@pytest.fixture
def stub(llm_stub):
    llm_stub.responder = answers
    return llm_stub


def load(tmp_path, config: str, stub, files: dict[str, str] | None = None, **kwargs):
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "promptfooconfig.yaml"
    path.write_text(config.replace("STUB", stub.base_url))
    return import_promptfoo(path.read_text(), make_project(), None, str(path), tmp_path, **kwargs)


def sweep(experiment):
    done = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")))
    assert done.status == "completed", done.error
    return done


def best(done) -> Run:
    return Run.objects.filter(sweep=done).order_by("-weighted_score", "id").first()


SEVERAL_PROMPTS_AND_PROVIDERS = """\
description: Capitals, several prompts and providers
prompts:
  - "What is the capital of {{country}}?"
  - file://prompts.txt
  - file://chat.json
  - id: "Name the capital of {{ country }}."
    label: imperative
providers:
  - id: openai:chat:strong
    label: strong
    config: {apiBaseUrl: STUB, temperature: 0.2, max_tokens: 64}
  - id: openai:weak
    config: {apiBaseUrl: STUB/, temperature: 0.9}
tests:
  - vars: {country: France}
    assert:
      - {type: contains, value: Paris}
  - vars: {country: Japan}
    assert:
      - {type: icontains, value: tokyo}
"""


def test_several_prompts_and_providers_become_linked_bundles_on_one_endpoint(tmp_path, stub):
    files = {
        "prompts.txt": "Capital of {{country}}?\n---\nTell me the capital of {{ country }}.\n",
        "chat.json": json.dumps(
            [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "{{country}}: capital?"}]
        ),
    }
    imported = load(tmp_path, SEVERAL_PROMPTS_AND_PROVIDERS, stub, files)
    experiment = imported.experiment
    assert imported.notes == [] and experiment.name == "Capitals, several prompts and providers"
    created = Endpoint.objects.get(project=experiment.project)
    assert created.base_url == stub.base_url and not created.has_api_key
    space = experiment.parameter_space
    assert space["provider"] == [
        {"endpoint": created.name, "model": "strong", "temperature": 0.2, "max_tokens": 64},
        {"endpoint": created.name, "model": "weak", "temperature": 0.9},
    ]
    assert (
        len(space["prompt"]) == 5
        and {"system": "Be terse.", "user": "{{country}}: capital?"} in space["prompt"]
    )
    assert [s["config"]["required_present"] for s in experiment.scorers] == [
        ["{{ assert_1 }}"],
        ["{{ assert_2 }}"],
    ]
    done = sweep(experiment)
    assert done.completed_runs == 10
    winner = best(done)
    assert winner.config["model"] == "strong" and winner.weighted_score == 1.0
    assert Run.objects.filter(sweep=done, config__model="weak", weighted_score=0.0).count() == 5
    # the leaderboard and the exported configuration see the bundles' parameters, flat
    top = leaderboard(experiment, n=1)[0]["config"]
    assert "provider" not in top and "prompt" not in top and top["temperature"] == 0.2
    assert exported_config(winner)["stages"][0]["params"] == {"temperature": 0.2, "max_tokens": 64}
    # each row is scored by its own test's assertion only
    assert Score.objects.filter(run=winner, value__isnull=False).count() == 2


CSV_TESTS = """\
prompts: ["Capital of {{country}}? Answer briefly."]
providers:
  - id: openai:chat:strong
    config: {apiBaseUrl: STUB}
tests: file://tests.csv
"""
TESTS_CSV = """\
country,__expected1,__expected2,__description
France,contains: Paris,grade: names the capital,first
Japan,icontains: TOKYO,regex: capital is \\w+,second
Peru,The capital is Lima.,,third
"""


def test_csv_tests_map_expected_columns_to_scorers(tmp_path, stub):
    make_endpoint("openai-ish", base_url=stub.base_url.rstrip("/") + "/", project=make_project())
    stub_url = stub.base_url
    imported = load(tmp_path, CSV_TESTS, stub, {"tests.csv": TESTS_CSV})
    experiment = imported.experiment
    assert experiment.endpoint.name == "openai-ish"  # matched by base URL, none created
    assert Endpoint.objects.filter(base_url__startswith=stub_url).count() == 1
    rows = list(experiment.items.order_by("position").values_list("input", flat=True))
    assert [r["country"] for r in rows] == ["France", "Japan", "Peru"]
    kinds = {s["name"]: (s["type"], s["config"].get("match")) for s in experiment.scorers}
    assert kinds == {
        "contains-1": ("keyword", "contains"),
        "llm-rubric-2": ("llm_judge", None),
        "icontains-3": ("keyword", "contains"),
        "regex-4": ("keyword", "regex"),
        "equals-5": ("keyword", "equals"),
    }
    assert [n["item"] for n in imported.notes] == ["description"] * 3
    winner = best(sweep(experiment))
    judged = Score.objects.get(run=winner, scorer="llm-rubric-2", value__isnull=False)
    assert judged.value == pytest.approx(8 / 9) and judged.item.position == 0  # its own row only
    assert winner.weighted_score == pytest.approx(((1 + 8 / 9) / 2 + 1 + 1) / 3)


DEFAULT_TEST = """\
prompts: ["Capital of {{country}}, {{ style }}?"]
providers:
  - id: openai:chat:strong
    config: {apiBaseUrl: STUB}
defaultTest:
  vars: {style: briefly}
  assert:
    - type: contains-any
      value: [Paris, Lima, Santiago]
    - type: not-icontains
      value: "I do not know"
tests:
  - vars: {country: [France, Peru]}
  - vars: {country: Chile, style: politely}
"""


def test_default_test_vars_and_asserts_apply_to_every_test(tmp_path, stub):
    experiment = load(tmp_path, DEFAULT_TEST, stub).experiment
    rows = list(experiment.items.order_by("position").values_list("input", flat=True))
    assert rows == [
        {"style": "briefly", "country": "France"},
        {"style": "briefly", "country": "Peru"},
        {"style": "politely", "country": "Chile"},
    ]
    any_of = experiment.scorers[0]["config"]
    assert any_of == {
        "required_present": ["Paris", "Lima", "Santiago"],
        "case_sensitive": True,
        "match": "contains",
        "mode": "any",
    }
    assert experiment.scorers[1]["config"]["required_absent"] == ["I do not know"]
    assert best(sweep(experiment)).weighted_score == 1.0


WEIGHTED = """\
prompts: ["Reply in JSON: the capital of {{country}}"]
providers:
  - id: openai:chat:strong
    config: {apiBaseUrl: STUB}
  - id: openai:chat:weak
    config: {apiBaseUrl: STUB}
tests:
  - vars: {country: France}
    assert:
      - type: is-json
        weight: 3
        value: {type: object, required: [capital], properties: {capital: {type: string}}}
      - type: starts-with
        value: '{"capital"'
  - vars: {country: Japan}
    assert:
      - type: is-json
        weight: 3
        value: {type: object, required: [capital], properties: {capital: {type: string}}}
      - type: starts-with
        value: '{"capital"'
"""


def test_assertion_weights_become_scorer_weights(tmp_path, stub):
    experiment = load(tmp_path, WEIGHTED, stub).experiment
    structure, prefix = experiment.scorers
    assert (structure["type"], structure["weight"], structure["config"]["check"]) == (
        "format",
        3.0,
        "structure",
    )
    assert (prefix["weight"], prefix["config"]["match"]) == (1.0, "starts_with")
    done = sweep(experiment)
    assert best(done).config["model"] == "strong" and best(done).weighted_score == 1.0
    weak = Run.objects.get(sweep=done, config__model="weak")
    assert weak.weighted_score == 0.0


UNSUPPORTED = """\
prompts:
  - "Capital of {{ country }}?"
  - "Capital of {{ country | dump }}?"
  - file://prompt.py
providers:
  - id: openai:chat:strong
    config: {apiBaseUrl: STUB, apiKey: sk-secret, organization: acme}
  - anthropic:messages:claude-3-5-sonnet
  - id: openai:chat:weak
    config: {apiBaseUrl: STUB}
    delay: 100
tests:
  - vars: {country: France}
    assert:
      - type: javascript
        value: output.length < 100
      - type: python
        value: file://check.py
      - type: contains
        value: Paris
      - type: cost
        threshold: 0.01
    options: {provider: openai:gpt-4}
outputPath: results.json
"""


def test_what_cannot_be_mapped_is_listed_with_its_location_and_the_rest_runs(tmp_path, stub):
    imported = load(tmp_path, UNSUPPORTED, stub)
    notes = {(n["location"], n["item"]) for n in imported.notes}
    assert notes == {
        ("outputPath", "outputPath"),
        ("prompts[1]", "user template"),
        ("prompts[2]", "file://prompt.py"),
        ("providers[0].config.apiKey", "apiKey"),
        ("providers[0].config.organization", "organization"),
        ("providers[1]", "anthropic:messages:claude-3-5-sonnet"),
        ("providers[2].delay", "delay"),
        ("tests[0].options", "options"),
        ("tests[0].assert[0]", "javascript"),
        ("tests[0].assert[1]", "python"),
        ("tests[0].assert[3]", "cost"),
    }
    filter_note = next(n for n in imported.notes if n["location"] == "prompts[1]")
    assert "dump" in filter_note["reason"]
    experiment = imported.experiment
    assert [s["type"] for s in experiment.scorers] == ["keyword"]
    assert "sk-secret" not in json.dumps(experiment.parameter_space)
    done = sweep(experiment)
    assert done.completed_runs == 2 and best(done).weighted_score == 1.0


JSONL_TESTS = """\
description: JSONL tests and similarity
prompts: ["Capital of {{country}}?"]
providers:
  - openai:chat:strong:
      config: {apiBaseUrl: STUB, temperature: 0}
tests:
  - file://tests.jsonl
  - vars: {country: Chile}
    assert:
      - type: contains-all
        value: [capital, Santiago]
"""
TESTS_JSONL = (
    '{"vars": {"country": "France"}, "assert": [{"type": "similar", "value": "The capital is Paris.", '
    '"threshold": 0.9}, {"type": "not-equals", "value": "Paris"}]}\n'
    '{"vars": {"country": "Peru"}, "assert": [{"type": "similar", "value": "The capital is Lima."}]}\n'
)


def test_jsonl_tests_and_similarity_against_the_reference(tmp_path, stub):
    project = make_project()
    make_endpoint("stub", base_url=stub.base_url, project=project, embedding_model="stub-embed")
    imported = load(tmp_path, JSONL_TESTS, stub, {"tests.jsonl": TESTS_JSONL})
    experiment = imported.experiment
    assert imported.notes == []
    assert experiment.parameter_space == {
        "provider": [{"endpoint": "stub", "model": "strong", "temperature": 0}]
    }
    rows = list(experiment.items.order_by("position").values_list("input", flat=True))
    assert [r.get("assert_1") for r in rows] == ["The capital is Paris.", None, None]
    assert [r.get("assert_3") for r in rows] == [None, "The capital is Lima.", None]
    similar = [s for s in experiment.scorers if s["type"] == "embedding"]
    assert [s["config"] for s in similar] == [
        {"threshold": 0.9, "reference_field": "assert_1"},
        {"threshold": 0.75, "reference_field": "assert_3"},
    ]
    done = sweep(experiment)
    winner = best(done)
    assert winner.status == RunStatus.COMPLETED
    assert Score.objects.filter(run=winner, scorer__startswith="similar", value=1.0).count() == 2
    assert Score.objects.get(run=winner, scorer__startswith="contains-all", value__isnull=False).value == 1.0


def test_a_config_without_a_usable_provider_is_refused_and_nothing_is_created(tmp_path, stub):
    config = (
        'prompts: ["Hi {{ name }}"]\nproviders: ["bedrock:claude", openai:chat]\ntests: [{vars: {name: a}}]\n'
    )
    with pytest.raises(DefinitionError, match=r"promptfooconfig.yaml:2: providers: no provider could be"):
        load(tmp_path, config, stub)
    assert not Endpoint.objects.exists()


def test_a_provider_parameter_out_of_range_is_refused_and_nothing_is_created(tmp_path, stub):
    config = (
        'prompts: ["Hi {{ name }}"]\n'
        "providers: [{id: 'openai:chat:m', config: {apiBaseUrl: STUB, temperature: 3}}]\n"
        "tests: [{vars: {name: a}}]\n"
    )
    with pytest.raises(
        DefinitionError, match=r"'provider' bundle 1: 'temperature' must be a number from 0 to 2"
    ):
        load(tmp_path, config, stub)
    assert not Endpoint.objects.exists()


def test_a_viewer_level_import_may_not_create_endpoints(tmp_path, stub):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied, match="takes the admin role"):
        load(tmp_path, DEFAULT_TEST, stub, create_endpoints=False)
    assert not Endpoint.objects.exists()


FILE_VARS = """\
prompts: ["{{ context }} Capital of {{country}}?"]
providers: [{id: "openai:chat:strong", config: {apiBaseUrl: STUB}}]
tests:
  - vars: {country: France, context: file://context.txt}
    assert:
      - {type: contains, value: Paris, threshold: 0.5}
      - {type: icontains, value: paris, weight: heavy}
"""


def test_file_variables_are_read_and_stray_thresholds_and_bad_weights_are_listed(tmp_path, stub):
    imported = load(tmp_path, FILE_VARS, stub, {"context.txt": "You know geography."})
    assert list(imported.experiment.items.values_list("input", flat=True)) == [
        {"country": "France", "context": "You know geography."}
    ]
    assert [(n["location"], n["reason"]) for n in imported.notes] == [
        ("tests[0].assert[0].threshold", "a threshold applies to similar and llm-rubric only"),
        ("tests[0].assert[1].weight", "a weight is a number, 0 or more"),
    ]
    assert [s["type"] for s in imported.experiment.scorers] == ["keyword"]
    assert best(sweep(imported.experiment)).weighted_score == 1.0


BAD_JSONL_TESTS = """\
prompts: ["Capital of {{country}}?"]
providers: [{id: "openai:chat:strong", config: {apiBaseUrl: STUB}}]
tests:
  - file://tests.jsonl
"""


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ('{"vars": {"country": "France"}}\n{"vars": {"country": \n', "tests.jsonl line 2: not valid JSON"),
        ('{"vars": {"country": NaN}}\n', "tests.jsonl line 1: not valid JSON (NaN is not a JSON number)"),
        ('{"vars": {"country": "France"}}\n\n["France"]\n', "tests.jsonl line 3: must be a test object"),
    ],
)
def test_a_bad_line_of_a_jsonl_tests_file_is_refused_naming_it(tmp_path, stub, lines, says):
    with pytest.raises(DefinitionError, match=r"promptfooconfig.yaml:3: " + re.escape(says)):
        load(tmp_path, BAD_JSONL_TESTS, stub, {"tests.jsonl": lines})
    assert not Endpoint.objects.exists()
