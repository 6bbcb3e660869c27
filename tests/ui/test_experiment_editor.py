"""The experiment editor: stages, parameters and scorers as formsets, checked by
experiments/validation.py and shown where the mistake is."""

import json

import pytest
from django.urls import reverse

from experiments.forms import format_values, parse_values
from experiments.models import Experiment
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


def management(prefix: str, total: int, initial: int = 0) -> dict:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial)}


def editor_data(stages: list[dict], params: list[dict] = (), scorers: list[dict] = (), **fields) -> dict:
    data = {"name": "Capitals", "description": "", "endpoint": ""} | fields
    data |= management("stages", len(stages)) | management("params", len(params))
    data |= management("scorers", len(scorers))
    for prefix, rows in (("stages", stages), ("params", params), ("scorers", scorers)):
        for n, row in enumerate(rows):
            data |= {f"{prefix}-{n}-{key}": value for key, value in row.items()}
    return data


KEYWORD = {"type": "keyword", "weight": "1", "config": '{"required_present": ["{{ capital }}"]}'}


def test_a_new_experiment_is_saved_from_the_forms(client, alice):
    endpoint = make_endpoint()
    data = editor_data(
        [{"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?", "ORDER": "1"}],
        [
            {"key": "temperature", "values": "0, 0.7"},
            {"key": "answer.user", "values": "Terse: {{ country }}\n---\nPlease: {{ country }}\nThanks."},
        ],
        [KEYWORD],
        endpoint=str(endpoint.pk),
    )
    response = client.post(reverse("ui:experiment_create"), data)
    experiment = Experiment.objects.get()
    assert response.status_code == 302 and response.url == reverse(
        "ui:experiment_detail", args=[experiment.pk]
    )
    assert experiment.pipeline == [
        {"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?"}
    ]
    assert experiment.parameter_space == {
        "temperature": [0, 0.7],
        "answer.user": ["Terse: {{ country }}", "Please: {{ country }}\nThanks."],
    }
    assert experiment.scorers == [
        {"type": "keyword", "weight": 1.0, "config": {"required_present": ["{{ capital }}"]}}
    ]
    assert experiment.endpoint == endpoint and experiment.created_by == alice


def test_a_template_syntax_error_names_the_stage_and_the_line(client):
    data = editor_data(
        [
            {"name": "draft", "user": "Draft {{ country }}", "ORDER": "1"},
            {"name": "answer", "user": "Improve:\n{{ previous }\nPlease.", "ORDER": "2"},
        ]
    )
    response = client.post(reverse("ui:experiment_create"), data)
    assert response.status_code == 200 and not Experiment.objects.exists()
    content = response.content.decode()
    assert "Stage &#x27;answer&#x27; user template: Template syntax error on line 2" in content
    # ...shown at that stage's field, not the first one's
    form = response.context["editor"].stages.forms[1]
    assert "line 2" in form.errors["user"][0] and not response.context["editor"].stages.forms[0].errors


def test_stages_are_saved_in_the_order_given_and_removed_ones_dropped(client):
    experiment = make_experiment(parameter_space={})
    data = editor_data(
        [
            {"name": "answer", "user": "Capital of {{ country }}?", "ORDER": "2"},
            {"name": "draft", "user": "Think about {{ country }}", "ORDER": "1"},
            {"name": "gone", "user": "x", "ORDER": "3", "DELETE": "on"},
        ],
        scorers=[KEYWORD],
    )
    data["stages-INITIAL_FORMS"] = "1"
    client.post(reverse("ui:experiment_edit", args=[experiment.pk]), data)
    experiment.refresh_from_db()
    assert experiment.stage_names == ["draft", "answer"]


def test_the_pipeline_needs_a_stage(client):
    data = editor_data([{"name": "answer", "user": "x", "ORDER": "1", "DELETE": "on"}])
    response = client.post(reverse("ui:experiment_create"), data)
    assert b"A pipeline needs at least one stage." in response.content


def test_a_parameter_naming_a_missing_stage_is_refused_with_the_key(client):
    data = editor_data(
        [{"name": "answer", "user": "Capital of {{ country }}?", "ORDER": "1"}],
        [{"key": "summary.temperature", "values": "0, 1"}],
    )
    response = client.post(reverse("ui:experiment_create"), data)
    assert b"&#x27;summary.temperature&#x27; names stage &#x27;summary&#x27;" in response.content


def test_a_broken_prompt_variant_names_the_variant_and_line(client):
    data = editor_data(
        [{"name": "answer", "user": "Capital of {{ country }}?", "ORDER": "1"}],
        [{"key": "answer.user", "values": "Fine {{ country }}\n---\nBroken {% if %}"}],
    )
    response = client.post(reverse("ui:experiment_create"), data)
    assert b"variant 2: Template syntax error on line 1" in response.content


def test_a_scorer_config_error_is_shown_at_that_scorer(client):
    data = editor_data(
        [{"name": "answer", "user": "Capital of {{ country }}?", "ORDER": "1"}],
        scorers=[
            KEYWORD,
            {"type": "format", "weight": "1", "config": '{"check": "length", "colour": "red"}'},
        ],
    )
    response = client.post(reverse("ui:experiment_create"), data)
    second = response.context["editor"].scorers.forms[1]
    assert "unknown option 'colour'" in second.errors["config"][0]
    assert not response.context["editor"].scorers.forms[0].errors


def test_scorers_that_call_a_model_are_marked_as_costing_tokens(client):
    experiment = make_experiment(
        scorers=[
            {"type": "keyword", "weight": 1.0, "config": {"required_present": ["Paris"]}},
            {"type": "llm_judge", "weight": 1.0, "config": {}},
        ]
    )
    edit = client.get(reverse("ui:experiment_edit", args=[experiment.pk])).content.decode()
    assert '<option value="llm_judge" selected>llm_judge (costs tokens)</option>' in edit
    assert '<option value="embedding">embedding</option>' in edit  # the local MiniLM, offline
    assert '<option value="keyword">keyword</option>' in edit
    detail = client.get(reverse("ui:experiment_detail", args=[experiment.pk])).content.decode()
    assert detail.count("costs tokens") == 1


def test_the_embedding_scorer_costs_tokens_only_when_it_calls_an_embedding_model(client):
    scorers = [{"type": "embedding", "weight": 1.0, "config": {}}]
    offline = make_experiment(make_endpoint("local"), scorers=scorers, name="Offline")
    detail = client.get(reverse("ui:experiment_detail", args=[offline.pk])).content.decode()
    assert "costs tokens" not in detail  # the bundled MiniLM embeds in-process
    paid = make_experiment(make_endpoint("paid", embedding_model="text-embedding-3-small"), scorers=scorers)
    detail = client.get(reverse("ui:experiment_detail", args=[paid.pk])).content.decode()
    assert detail.count("costs tokens") == 1


def test_the_editor_carries_each_scorer_types_options_for_the_structured_editor(client):
    content = client.get(reverse("ui:experiment_create")).content.decode()
    start = content.index('<script id="scorer-options" type="application/json">') + 52
    options = json.loads(content[start : content.index("</script>", start)])
    keyword = {o["name"]: o for o in options["keyword"]}
    assert keyword["required_present"]["kind"] == "lines" and keyword["case_sensitive"]["kind"] == "bool"
    check = next(o for o in options["format"] if o["name"] == "check")
    assert check["kind"] == "choice" and check["required"] and "json" in check["choices"]
    assert options["human"] == []


def test_the_editor_lists_the_variables_the_dataset_provides(client):
    experiment = make_experiment()
    content = client.get(reverse("ui:experiment_edit", args=[experiment.pk])).content.decode()
    assert "<code>capital</code> <code>country</code>" in content
    assert 'data-variables="capital,country"' in content


def test_an_existing_experiment_round_trips_through_the_editor(client):
    space = {
        "temperature": [0.0, 0.7],
        "answer.user": ["A {{ country }}", "B, {{ country }}"],
        "top_p": {"min": 0.1, "max": 1},
    }
    experiment = make_experiment(parameter_space=space)
    response = client.get(reverse("ui:experiment_edit", args=[experiment.pk]))
    editor = response.context["editor"]
    data = editor_data(
        [
            f.initial | {"ORDER": str(n + 1), "params": json.dumps(f.initial.get("params", {}))}
            for n, f in enumerate(editor.stages.forms)
        ],
        [f.initial for f in editor.parameters.forms],
        [f.initial | {"config": json.dumps(f.initial["config"])} for f in editor.scorers.forms],
    )
    data |= {"stages-INITIAL_FORMS": "1", "params-INITIAL_FORMS": "3", "scorers-INITIAL_FORMS": "1"}
    assert client.post(reverse("ui:experiment_edit", args=[experiment.pk]), data).status_code == 302
    experiment.refresh_from_db()
    assert experiment.parameter_space == space


def test_the_live_template_check_reports_the_line_or_the_variables(client):
    url = reverse("ui:check_template")
    bad = client.post(
        url, {"source": "Hi\n{{ name ", "where": "Stage 'a' user template"}, content_type="application/json"
    )
    assert bad.json()["ok"] is False and bad.json()["line"] == 2
    assert bad.json()["error"].startswith("Stage 'a' user template: Template syntax error on line 2")
    good = client.post(url, {"source": "{{ country }} and {{ previous }}"}, content_type="application/json")
    assert good.json() == {"ok": True, "error": None, "variables": ["country", "previous"]}


@pytest.mark.parametrize(
    "key, text, values",
    [
        ("temperature", "0, 0.5, 1", [0, 0.5, 1]),
        ("model", "stub-small, stub-large", ["stub-small", "stub-large"]),
        ("stream", "true, false", [True, False]),
        ("top_p", '{"min": 0.1, "max": 1}', {"min": 0.1, "max": 1}),
        ("stop", '[["\\n"], null]', [["\n"], None]),
        ("answer.system", "One\n---\nTwo, with a comma", ["One", "Two, with a comma"]),
    ],
)
def test_parameter_values_are_read_and_written_the_same_way(key, text, values):
    assert parse_values(key, text) == values
    assert parse_values(key, format_values(key, values)) == values


def test_what_a_running_sweep_reads_cannot_change_under_it(client):
    from runs.models import Sweep, SweepStatus
    from tests.factories import make_experiment

    experiment = make_experiment()
    Sweep.objects.create(experiment=experiment, status=SweepStatus.RUNNING, total_runs=1)
    stage = {"name": "answer", "system": "", "user": "Now: {{ country }}?", "ORDER": "1"}
    data = editor_data([stage], [{"key": "temperature", "values": "0, 0.7"}], [KEYWORD], name="Capitals")
    response = client.post(reverse("ui:experiment_edit", args=[experiment.pk]), data)
    assert response.status_code == 200
    assert b"stop it before changing pipeline" in response.content
    experiment.refresh_from_db()
    assert experiment.pipeline[0]["user"] == "What is the capital of {{ country }}?"


def test_a_template_reading_a_variable_nothing_provides_is_refused_in_the_editor(client):
    experiment = make_experiment()
    stages = [
        {"name": "answer", "system": "", "user": "Capital of {{ country }}?", "ORDER": "1"},
        {"name": "rewrite", "system": "", "user": "Rewrite this answer: {{ answer }}", "ORDER": "2"},
    ]
    response = client.post(reverse("ui:experiment_edit", args=[experiment.pk]), editor_data(stages))
    assert response.status_code == 200
    page = response.content.decode()
    assert "uses {{ answer }}, which no dataset column, stage or built-in provides" in page.replace(
        "&#x27;", "'"
    )
    assert "capital (dataset column), country (dataset column)" in page
    experiment.refresh_from_db()
    assert len(experiment.pipeline) == 1


def test_a_parameter_value_out_of_range_is_shown_at_the_parameters(client):
    data = editor_data(
        [{"name": "answer", "user": "Capital of {{ country }}?", "ORDER": "1"}],
        [{"key": "temperature", "values": "0, 2.5"}],
    )
    response = client.post(reverse("ui:experiment_create"), data)
    assert response.status_code == 200 and not Experiment.objects.exists()
    errors = response.context["editor"].parameters.non_form_errors()
    assert "'temperature' must be a number from 0 to 2, got 2.5" in errors[0]


def test_a_misspelt_stage_parameter_says_the_closest_name(client):
    data = editor_data(
        [
            {
                "name": "answer",
                "user": "Capital of {{ country }}?",
                "ORDER": "1",
                "params": '{"temprature": 0.2}',
            }
        ]
    )
    response = client.post(reverse("ui:experiment_create"), data)
    errors = response.context["editor"].stages.non_form_errors()
    assert "Stage 'answer' params: unknown parameter 'temprature' — did you mean temperature?" in errors[0]
    assert not Experiment.objects.exists()


def test_a_server_parameter_is_saved_only_with_an_endpoint_that_lists_it(client):
    plain = make_endpoint("openai")
    vllm = make_endpoint("vllm", extra_params=["top_k"])
    stages = [{"name": "answer", "user": "Capital of {{ country }}?", "ORDER": "1"}]
    params = [{"key": "top_k", "values": "20, 40"}]
    refused = client.post(
        reverse("ui:experiment_create"), editor_data(stages, params, endpoint=str(plain.pk))
    )
    assert refused.status_code == 200 and not Experiment.objects.exists()
    assert "unknown parameter &#x27;top_k&#x27;" in refused.content.decode()
    saved = client.post(reverse("ui:experiment_create"), editor_data(stages, params, endpoint=str(vllm.pk)))
    assert saved.status_code == 302
    assert Experiment.objects.get().parameter_space == {"top_k": [20, 40]}
