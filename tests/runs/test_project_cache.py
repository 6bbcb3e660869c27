"""The response cache is per project: one team cannot learn another's answers by
sending the same prompt, while each project still pays for a call only once."""

import pytest

from runs.bridge import cache_table_stats
from runs.models import Run
from runs.tasks import execute_run
from tests.factories import make_endpoint, make_experiment, make_project

pytestmark = pytest.mark.django_db(transaction=True)


def experiment_in(project, base_url):
    n = project.experiments.count()
    endpoint = make_endpoint(f"local-{n}", base_url=base_url, project=project)
    return make_experiment(endpoint, name=f"Capitals {n} of {project}")


def run_once(experiment) -> Run:
    run = Run.objects.create(experiment=experiment, config={"temperature": 0.2}, config_hash="x")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_the_same_prompt_in_another_project_is_a_call_of_its_own(llm_stub):
    ours, theirs = make_project("Ours"), make_project("Theirs")
    first = run_once(experiment_in(ours, llm_stub.base_url))
    assert first.status == "completed" and llm_stub.calls == 3 and first.cached_calls == 0
    again = run_once(experiment_in(ours, llm_stub.base_url))
    assert llm_stub.calls == 3 and again.cached_calls == 3  # the same project: paid once
    other = run_once(experiment_in(theirs, llm_stub.base_url))
    assert llm_stub.calls == 6 and other.cached_calls == 0  # another project: nothing shared
    assert cache_table_stats([ours.pk]) | {"entries": 3} == cache_table_stats([ours.pk])
    assert cache_table_stats([ours.pk])["hits"] == 3 and cache_table_stats([theirs.pk])["hits"] == 0


def test_a_single_team_may_share_one_cache_across_its_projects(llm_stub, settings):
    settings.CACHE_SHARED_ACROSS_PROJECTS = True
    run_once(experiment_in(make_project("Ours"), llm_stub.base_url))
    other = run_once(experiment_in(make_project("Theirs"), llm_stub.base_url))
    assert llm_stub.calls == 3 and other.cached_calls == 3
