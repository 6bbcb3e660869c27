"""`manage.py run_sweep` as a CI gate: 0 when it holds, 1 when it does not, 2 on an error."""

import json
from xml.etree import ElementTree

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from runs.management.commands.run_sweep import Command
from runs.models import Sweep
from tests.factories import make_endpoint, make_experiment, make_project

pytestmark = pytest.mark.django_db(transaction=True)

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima"}


def capitals(body: dict) -> str:
    """Right for the plain prompt, wrong for the 'Guess' prompt."""
    content = body["messages"][-1]["content"]
    if content.startswith("Guess"):
        return "No idea."
    return next((c for country, c in CAPITALS.items() if country in content), "Nowhere")


@pytest.fixture
def experiment(llm_stub):
    llm_stub.responder = capitals
    endpoint = make_endpoint(base_url=llm_stub.base_url, project=make_project())
    return make_experiment(
        endpoint, parameter_space={"temperature": [0.0, 0.5]}, sweep_defaults={"type": "grid"}
    )


def gate(*args) -> tuple[int, str]:
    """The exit code and what was printed."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("run_sweep", *[str(a) for a in args], stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def test_a_sweep_that_clears_the_floor_exits_0_and_prints_the_leaderboard(experiment, tmp_path):
    code, out = gate(experiment.pk, "--wait", "--fail-under", 0.9, "--json", tmp_path / "gate.json")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["rank", "score", "95%"]
    assert lines[1].split()[:2] == ["1", "1.000"] and '"temperature": 0.0' in out
    assert "Gate holds" in lines[-1]
    verdict = json.loads((tmp_path / "gate.json").read_text())
    assert verdict["passed"] and verdict["best_score"] == 1.0 and len(verdict["leaderboard"]) == 2


def test_the_junit_file_has_one_case_per_dataset_row_of_the_best_configuration(experiment, tmp_path):
    experiment.items.filter(position=2).update(input={"country": "Peru", "capital": "Cusco"})
    code, out = gate(experiment.name, "--fail-under", 0.5, "--junit", tmp_path / "junit.xml")
    assert code == 0
    suite = ElementTree.parse(tmp_path / "junit.xml").getroot()
    assert (suite.tag, suite.get("name"), suite.get("tests"), suite.get("failures")) == (
        "testsuite",
        "Capitals",
        "3",
        "1",
    )
    cases = suite.findall("testcase")
    assert [c.get("name").split(":")[0] for c in cases] == ["row 0", "row 1", "row 2"]
    assert [c.find("failure") is not None for c in cases] == [False, False, True]
    assert cases[0].find("system-out").text == "Paris"
    failure = json.loads(cases[2].find("failure").text)
    assert failure["score"] == 0.0 and failure["scores"] == {"keyword": 0.0}


def test_a_best_score_under_the_floor_exits_1(experiment, tmp_path):
    experiment.pipeline = [{"name": "answer", "user": "Guess the capital of {{ country }}"}]
    experiment.save()
    code, out = gate(experiment.pk, "--fail-under", "0.5", "--junit", tmp_path / "junit.xml")
    assert code == 1
    assert "best score 0.0000 is under --fail-under 0.5" in out
    assert ElementTree.parse(tmp_path / "junit.xml").getroot().get("failures") == "3"


def test_a_real_regression_from_the_baseline_exits_1_unless_allowed(experiment):
    assert gate(experiment.pk, "--wait")[0] == 0
    baseline = Sweep.objects.get(experiment=experiment)
    experiment.pipeline = [{"name": "answer", "user": "Guess the capital of {{ country }}"}]
    experiment.save()
    code, out = gate(experiment.pk, "--baseline", baseline.pk)
    assert code == 1 and f"1.0000 worse than baseline sweep #{baseline.pk}" in out
    assert gate(experiment.pk, "--baseline", baseline.pk, "--max-regression", "1.0")[0] == 0


def test_an_equal_result_is_no_regression(experiment):
    gate(experiment.pk, "--wait")
    baseline = Sweep.objects.get(experiment=experiment)
    assert gate(experiment.pk, "--baseline", baseline.pk, "--fail-under", "1.0")[0] == 0


def test_errors_exit_2(experiment):
    assert gate("no such experiment", "--wait")[0] == 2
    assert gate(experiment.pk, "--baseline", 999_999)[0] == 2
    other = make_experiment(experiment.endpoint, name="Other")
    gate(other.pk, "--wait")
    code, out = gate(experiment.pk, "--baseline", Sweep.objects.get(experiment=other).pk)
    assert code == 2 and "another experiment" in out
    experiment.endpoint = None
    experiment.save()
    code, out = gate(experiment.pk, "--wait")
    assert code == 2 and "Choose an endpoint" in out


def test_the_process_exit_code_and_one_line_on_stderr(experiment, capsys):
    with pytest.raises(SystemExit) as info:
        Command().run_from_argv(["manage.py", "run_sweep", "missing", "--fail-under", "0.5"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no experiment is 'missing'" in err[0]
    with pytest.raises(SystemExit) as info:
        Command().run_from_argv(["manage.py", "run_sweep", str(experiment.pk), "--fail-under", "1.1"])
    assert info.value.code == 1


def test_with_redis_the_workers_run_the_sweep_and_the_gate_waits_for_them(llm_stub, distributed, tmp_path):
    llm_stub.responder = capitals
    endpoint = make_endpoint(base_url=llm_stub.base_url, project=make_project())
    experiment = make_experiment(endpoint, parameter_space={"temperature": [0.0, 0.5]})
    distributed.start(1)
    code, out = gate(experiment.pk, "--fail-under", "1.0", "--junit", tmp_path / "junit.xml")
    assert code == 0, out
    sweep = Sweep.objects.get(experiment=experiment)
    assert sweep.status == "completed" and set(sweep.runs.values_list("worker", flat=True)) != {""}
    assert ElementTree.parse(tmp_path / "junit.xml").getroot().get("failures") == "0"


def test_a_racing_sweep_can_be_gated_too(experiment, tmp_path):
    code, out = gate(
        experiment.pk, "--type", "racing", "--fail-under", "0.9", "--json", tmp_path / "gate.json"
    )
    assert code == 0, out
    assert Sweep.objects.get(experiment=experiment).type == "racing"
    assert json.loads((tmp_path / "gate.json").read_text())["best_score"] == 1.0
