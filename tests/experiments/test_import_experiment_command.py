"""`manage.py import_experiment PATH [--project ID] [--update] [--format promptfoo]`."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments.models import Experiment
from tests.factories import make_endpoint, make_project

pytestmark = pytest.mark.django_db

DEFINITION = """\
name: From a file
endpoint: local
pipeline:
  - name: answer
    user: "Capital of {{ country }}?"
dataset: rows.csv
parameter_space:
  provider:
    - {model: small, temperature: 0.1}
    - {model: large, temperature: 0.9}
scorers:
  - {type: keyword, config: {required_present: ["{{ reference }}"]}}
"""


def run(*args) -> str:
    out = StringIO()
    call_command("import_experiment", *[str(a) for a in args], stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "rows.csv").write_text("country,reference\nFrance,Paris\nPeru,Lima\n")
    (tmp_path / "exp.yaml").write_text(DEFINITION)
    return tmp_path


def test_it_creates_the_experiment_in_the_named_project_then_updates_it(files):
    make_project("Other")
    project = make_project()
    make_endpoint("local", project=project)
    out = run(files / "exp.yaml", "--project", project.pk)
    assert out.strip() == (
        f"Created experiment 'From a file' (#{Experiment.objects.get().pk}) in project 'Team' "
        "with 2 dataset rows; 0 thing(s) not imported."
    )
    with pytest.raises(CommandError, match="import with update"):
        run(files / "exp.yaml", "--project", project.pk)
    (files / "rows.csv").write_text("country,reference\nChile,Santiago\n")
    assert run(files / "exp.yaml", "--project", project.pk, "--update").startswith("Updated experiment")
    assert list(Experiment.objects.get().items.values_list("reference", flat=True)) == ["Santiago"]


def test_without_project_it_needs_exactly_one(files):
    make_project("One")
    make_project("Two")
    with pytest.raises(CommandError, match="--project"):
        run(files / "exp.yaml")


def test_an_error_names_the_file_and_the_line(files):
    make_endpoint("local", project=make_project())
    (files / "exp.yaml").write_text(DEFINITION.replace("temperature: 0.9", "temperature: [0.9]"))
    with pytest.raises(CommandError) as info:
        run(files / "exp.yaml")
    assert str(info.value).startswith(f"{files / 'exp.yaml'}:10: parameter_space: 'provider' bundle 2")


def test_a_parameter_out_of_range_stops_the_import_with_one_line(files):
    make_endpoint("local", project=make_project())
    (files / "exp.yaml").write_text(DEFINITION.replace("temperature: 0.9", "temperature: 9"))
    with pytest.raises(CommandError) as info:
        run(files / "exp.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{files / 'exp.yaml'}:10: parameter_space: ")
    assert "'provider' bundle 2: 'temperature' must be a number from 0 to 2, got 9" in message
    assert not Experiment.objects.exists()


def test_a_promptfoo_config_lists_what_was_not_imported(files):
    make_endpoint("local", base_url="http://127.0.0.1:9/v1", project=make_project())
    (files / "promptfooconfig.yaml").write_text(
        "prompts: ['Capital of {{country}}?']\n"
        "providers: [{id: 'openai:chat:m', config: {apiBaseUrl: 'http://127.0.0.1:9/v1'}}]\n"
        "tests:\n  - vars: {country: France}\n    assert: [{type: python, value: 'True'}]\n"
    )
    out = run(files / "promptfooconfig.yaml", "--format", "promptfoo")
    assert "not imported: tests[0].assert[0]: python (no PromptLooper scorer does this)" in out
    assert "Created experiment 'promptfooconfig'" in out


def test_sweep_defaults_a_launch_would_refuse_stop_the_import_with_one_line(files):
    make_endpoint("local", project=make_project())
    (files / "exp.yaml").write_text(DEFINITION + "sweep: {type: grid, repeats: 101}\n")
    with pytest.raises(CommandError) as info:
        run(files / "exp.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message == f"{files / 'exp.yaml'}:13: sweep.repeats: must be a whole number from 1 to 100, not 101"
    assert not Experiment.objects.exists()
