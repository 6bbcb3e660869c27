"""/experiments/<id>/matrix/: configurations side by side, one row per dataset row."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from experiments.models import DatasetItem
from tests.api.helpers import scored_run, stage_result
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

N_ITEMS = 30


@pytest.fixture
def experiment(db):
    items = [({"country": f"Country {i}"}, f"Capital {i}") for i in range(N_ITEMS)]
    return make_experiment(make_endpoint(), items=items)


def configuration(experiment, temperature, scores, say=lambda i: f"Capital {i}"):
    run = scored_run(experiment, {"temperature": temperature}, {"keyword": scores})
    for i, item in enumerate(experiment.items.order_by("position")):
        stage_result(run, item, output=say(i))
    return run


@pytest.fixture
def runs(experiment):
    """Five configurations, best first; row 3 splits them, row 5 fails everywhere."""
    runs = []
    for n in range(5):
        scores = [1.0] * N_ITEMS
        scores[5] = 0.0
        if n >= 2:
            scores[3] = 0.0
        say = (lambda i: "I believe it is Atlantis" if i == 3 else f"Capital {i}") if n >= 2 else None
        runs.append(configuration(experiment, n / 10, scores, *([say] if say else [])))
    return runs


def matrix(client, experiment, **params):
    return client.get(reverse("ui:matrix", args=[experiment.pk]), params)


def test_the_top_four_configurations_are_columns_and_every_row_has_their_outputs(client, experiment, runs):
    content = matrix(client, experiment).content.decode()
    columns = content.split("<tbody>")[0]
    assert [f'href="/runs/{run.pk}/"' in columns for run in runs] == [True, True, True, True, False]
    assert content.count('<tr tabindex="0"') == 25  # the first page
    assert "30 rows" in content
    assert '<th scope="row">#1' in content  # rows are numbered from 1
    assert content.count("Capital 0</pre>") == 4
    assert "keyword: 1.00" in content and 'class="badge fail">keyword: 0.00' in content
    assert f"/runs/{runs[0].pk}/?item=" in content  # each cell links to its stage outputs


def test_the_second_page_holds_the_remaining_rows(client, experiment, runs):
    content = matrix(client, experiment, page=2).content.decode()
    assert content.count('<tr tabindex="0"') == N_ITEMS - 25
    assert "Page 2 of 2" in content and 'rel="prev"' in content


def test_ticked_configurations_replace_the_default_columns(client, experiment, runs):
    content = matrix(client, experiment, run=[runs[4].pk, runs[0].pk]).content.decode()
    head = content.split("<tbody>")[0]
    assert f'href="/runs/{runs[0].pk}/"' in head and f'href="/runs/{runs[4].pk}/"' in head
    assert f'href="/runs/{runs[1].pk}/"' not in head


def test_where_they_disagree_keeps_the_rows_some_pass_and_others_fail(client, experiment, runs):
    content = matrix(client, experiment, filter="disagree").content.decode()
    assert content.count('<tr tabindex="0"') == 1
    assert "I believe it is Atlantis" in content and "1 row<" in content


def test_failures_only_keeps_every_row_a_configuration_failed(client, experiment, runs):
    content = matrix(client, experiment, filter="failures").content.decode()
    assert content.count('<tr tabindex="0"') == 2  # row 3 (split) and row 5 (all fail)


def test_a_failure_of_a_configuration_not_shown_does_not_count(client, experiment, runs):
    content = matrix(client, experiment, filter="failures", run=[runs[0].pk]).content.decode()
    assert content.count('<tr tabindex="0"') == 1


def test_text_search_finds_inputs_references_and_outputs(client, experiment, runs):
    assert rows_of(matrix(client, experiment, q="country 7")) == 1  # an input, in any case
    assert rows_of(matrix(client, experiment, q="Capital 2")) == 11  # references 2 and 20–29
    assert rows_of(matrix(client, experiment, q="atlantis")) == 1  # an output


def rows_of(response) -> int:
    return response.content.decode().count('<tr tabindex="0"')


def test_an_unknown_filter_shows_every_row(client, experiment, runs):
    assert "30 rows" in matrix(client, experiment, filter="nonsense").content.decode()


def test_a_page_costs_the_same_queries_for_30_rows_as_for_300(client, experiment, runs):
    with CaptureQueriesContext(connection) as small:
        matrix(client, experiment, filter="failures", q="a")
    more = [
        DatasetItem(experiment=experiment, position=N_ITEMS + i, input={"country": "X"}) for i in range(270)
    ]
    DatasetItem.objects.bulk_create(more)
    for run in runs:
        for item in experiment.items.filter(position__gte=N_ITEMS):
            stage_result(run, item, output="a")
    with CaptureQueriesContext(connection) as large:
        matrix(client, experiment, filter="failures", q="a")
    assert len(large) == len(small)


def test_an_experiment_without_runs_says_how_to_get_some(client, experiment):
    assert "Launch a sweep" in matrix(client, experiment).content.decode()
