"""Dataset pages: import CSV or JSONL through a preview, add and edit rows."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from experiments.models import DatasetItem
from tests.factories import make_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment():
    return make_experiment()


def upload(client, experiment, name: str, text: str, mode: str = "append"):
    file = SimpleUploadedFile(name, text.encode(), content_type="text/plain")
    return client.post(reverse("ui:dataset_import", args=[experiment.pk]), {"file": file, "mode": mode})


def test_a_csv_is_previewed_before_anything_is_written(client, experiment):
    response = upload(
        client, experiment, "more.csv", "country,capital,Reference\nItaly,Rome,Rome.\nChile,Santiago,x\n"
    )
    content = response.content.decode()
    assert response.status_code == 200
    assert "2 rows read" in content and "added after the 3 current rows" in content
    assert "<td>Italy</td>" in content and "<td>Rome.</td>" in content
    assert experiment.items.count() == 3

    response = client.post(reverse("ui:dataset_import_confirm", args=[experiment.pk]), follow=True)
    assert b"Imported 2 rows; the dataset has 5." in response.content
    italy = experiment.items.get(input__country="Italy")
    assert italy.input == {"country": "Italy", "capital": "Rome"} and italy.reference == "Rome."
    assert italy.position == 3


def test_replace_mode_replaces_the_rows(client, experiment):
    upload(
        client, experiment, "new.jsonl", '{"country": "Chad", "reference": "N\'Djamena"}\n', mode="replace"
    )
    client.post(reverse("ui:dataset_import_confirm", args=[experiment.pk]))
    assert list(experiment.items.values_list("input", "reference")) == [({"country": "Chad"}, "N'Djamena")]


def test_a_bad_line_is_reported_with_its_number(client, experiment):
    response = upload(client, experiment, "bad.jsonl", '{"country": "Chad"}\n{"country": \n')
    assert response.status_code == 400
    assert b"Line 2: not valid JSON" in response.content
    assert (
        client.post(reverse("ui:dataset_import_confirm", args=[experiment.pk]), follow=True).status_code
        == 200
    )
    assert experiment.items.count() == 3


def test_confirming_without_an_upload_says_what_to_do(client, experiment):
    response = client.post(reverse("ui:dataset_import_confirm", args=[experiment.pk]), follow=True)
    assert b"Nothing to import: upload the file again." in response.content


def test_the_dataset_page_lists_rows_under_their_variables(client, experiment):
    content = client.get(reverse("ui:dataset", args=[experiment.pk])).content.decode()
    assert '<th scope="col">capital</th><th scope="col">country</th>' in content
    assert "<td>Paris</td>" in content and "Paris is the capital of France." in content


def test_a_row_is_added_with_the_known_variables_and_a_new_one(client, experiment):
    data = {"var_country": "Italy", "var_capital": "Rome", "new_variable": "continent", "new_value": "Europe"}
    client.post(reverse("ui:dataset", args=[experiment.pk]), data | {"reference": "Rome"})
    row = experiment.items.order_by("-position").first()
    assert row.input == {"country": "Italy", "capital": "Rome", "continent": "Europe"} and row.position == 3


def test_editing_a_row_keeps_values_the_user_did_not_touch(client, experiment):
    row = DatasetItem.objects.create(
        experiment=experiment, input={"country": "Peru", "capital": "Lima", "rank": 3}
    )
    page = client.get(reverse("ui:dataset_item", args=[experiment.pk, row.pk]))
    assert 'name="var_rank"' in page.content.decode()
    client.post(
        reverse("ui:dataset_item", args=[experiment.pk, row.pk]),
        {"var_country": "Peru", "var_capital": "Lima (city)", "var_rank": "3", "reference": "Lima"},
    )
    row.refresh_from_db()
    assert row.input == {"country": "Peru", "capital": "Lima (city)", "rank": 3} and row.reference == "Lima"


def test_a_row_can_be_deleted(client, experiment):
    row = experiment.items.first()
    client.post(reverse("ui:dataset_item_delete", args=[experiment.pk, row.pk]))
    assert not DatasetItem.objects.filter(pk=row.pk).exists()


def test_rows_cannot_change_while_a_sweep_runs_on_them(client, experiment):
    from runs.models import Sweep, SweepStatus

    Sweep.objects.create(experiment=experiment, status=SweepStatus.RUNNING, total_runs=1)
    item = experiment.items.first()
    response = client.post(reverse("ui:dataset_item_delete", args=[experiment.pk, item.pk]), follow=True)
    assert b"stop it before changing its dataset" in response.content
    assert experiment.items.count() == 3
    response = client.post(
        reverse("ui:dataset", args=[experiment.pk]), {"reference": "x", "input_country": "Chile"}, follow=True
    )
    assert experiment.items.count() == 3


def test_a_viewer_reads_the_dataset_without_buttons_that_would_refuse_them(client, experiment, bob):
    from projects.models import Role
    from tests.factories import add_member, make_user

    url = reverse("ui:dataset", args=[experiment.pk])
    item = experiment.items.first()
    edit_url = reverse("ui:dataset_item", args=[experiment.pk, item.pk])
    client.force_login(bob)  # an editor: everything is offered
    page = client.get(url).content.decode()
    assert "Add row" in page and "Preview import" in page and edit_url in page
    viewer = make_user("victor")
    add_member(experiment.project, viewer, Role.VIEWER)
    client.force_login(viewer)
    page = client.get(url).content.decode()
    assert client.get(url).status_code == 200 and item.reference[:20] in page
    assert "Add row" not in page and "Preview import" not in page and edit_url not in page
    assert "New experiment" not in page  # the header asks the same rule
