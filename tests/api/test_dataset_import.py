"""POST /api/experiments/{id}/dataset/: CSV or JSONL, as a file or the raw body."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from runs.models import Sweep, SweepStatus
from tests.factories import make_experiment

pytestmark = pytest.mark.django_db

CSV = 'country,capital,reference\nFrance,Paris,"Paris, of course"\nChile,Santiago,Santiago\n'


@pytest.fixture
def experiment(db):
    return make_experiment()


def url(experiment, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/experiments/{experiment.pk}/dataset/" + (f"?{query}" if query else "")


def rows(experiment):
    return list(experiment.items.order_by("position").values_list("input", "reference"))


def test_a_csv_file_replaces_the_dataset(api, experiment):
    upload = SimpleUploadedFile("capitals.csv", CSV.encode(), content_type="text/csv")
    response = api.post(url(experiment), {"file": upload, "mode": "replace"}, format="multipart")
    assert response.status_code == 200, response.json()
    assert response.json() == {"imported": 2, "dataset_size": 2, "mode": "replace", "file_format": "csv"}
    assert rows(experiment) == [
        ({"country": "France", "capital": "Paris"}, "Paris, of course"),
        ({"country": "Chile", "capital": "Santiago"}, "Santiago"),
    ]


def test_a_raw_csv_body_is_appended_by_default(api, experiment):
    response = api.generic("POST", url(experiment), CSV.encode(), content_type="text/csv")
    assert response.status_code == 200, response.json()
    assert response.json()["dataset_size"] == 5 and response.json()["mode"] == "append"
    positions = list(experiment.items.order_by("position").values_list("position", flat=True))
    assert positions == [0, 1, 2, 3, 4]


def test_jsonl_rows_may_be_nested_or_flat(api, experiment):
    lines = [
        {"input": {"country": "France"}, "reference": "Paris"},
        {"country": "Chile", "reference": "Santiago"},
        {"country": "Peru"},
        {"input": "a variable called input", "reference": 7},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    response = api.generic(
        "POST", url(experiment, mode="replace"), text.encode(), content_type="application/x-ndjson"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["file_format"] == "jsonl"
    assert rows(experiment) == [
        ({"country": "France"}, "Paris"),
        ({"country": "Chile"}, "Santiago"),
        ({"country": "Peru"}, ""),
        ({"input": "a variable called input"}, "7"),
    ]


def test_the_format_is_sniffed_from_the_first_character(api, experiment):
    text = '{"country": "Chile", "reference": "Santiago"}'
    response = api.generic("POST", url(experiment), text.encode(), content_type="text/plain")
    assert response.json()["file_format"] == "jsonl"


BAD_FILES = [
    ("csv", "country,reference\nFrance,Paris\nChile,Santiago,extra\n", "Line 3: expected 2 fields, found 3"),
    ("csv", "country,,reference\nFrance,x,Paris\n", "Line 1: column 2 has no name"),
    ("csv", "country,country\nFrance,France\n", "appears twice"),
    ("csv", "country,reference\n", "no data rows"),
    ("jsonl", '{"country": "France"}\n{"country": \n', "Line 2: not valid JSON"),
    ("jsonl", '{"country": "France"}\n\n[1, 2]\n', "Line 3: expected an object"),
    ("jsonl", '{"country": "France", "reference": ["Paris"]}\n', "Line 1: reference must be text"),
    ("jsonl", '{"country": "Fr\\u0000ance"}\n', "NUL"),
    ("jsonl", '{"deep": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "Line 1: nested deeper than 32 levels"),
    ("jsonl", '{"deep": ' + "[" * 40 + "]" * 40 + "}\n", "Line 1: nested deeper than 32 levels"),
    ("jsonl", '{"n": 1' + "0" * 5000 + "}\n", "Line 1: Exceeds the limit (4300 digits)"),
    ("jsonl", '{"country": "France"}\n{"x": NaN}\n', "Line 2: NaN is not a JSON number"),
    ("jsonl", '{"x": -Infinity}\n', "Line 1: -Infinity is not a JSON number"),
]


@pytest.mark.parametrize("fmt,text,message", BAD_FILES, ids=[m for _, _, m in BAD_FILES])
def test_a_bad_row_is_a_400_naming_its_line_and_nothing_changes(api, experiment, fmt, text, message):
    before = rows(experiment)
    response = api.generic(
        "POST", url(experiment, mode="replace", file_format=fmt), text.encode(), content_type="text/plain"
    )
    assert response.status_code == 400
    assert message in response.json()["dataset"][0]
    assert rows(experiment) == before


def test_a_file_that_is_not_utf8_is_refused(api, experiment):
    response = api.generic(
        "POST", url(experiment), "country,reference\nMéxico,CDMX\n".encode("latin-1"), content_type="text/csv"
    )
    assert response.status_code == 400 and "UTF-8" in response.json()["dataset"][0]
    assert response.json()["dataset"][0].startswith("Line 2")


def test_a_bad_mode_names_the_mode(api, experiment):
    response = api.generic("POST", url(experiment, mode="merge"), CSV.encode(), content_type="text/csv")
    assert response.status_code == 400 and "mode" in response.json()
    assert experiment.items.count() == 3


def test_multipart_without_a_file_names_the_file(api, experiment):
    response = api.post(url(experiment), {"mode": "replace"}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()


def test_the_dataset_cannot_change_under_a_running_sweep(api, experiment):
    Sweep.objects.create(experiment=experiment, status=SweepStatus.PAUSED)
    response = api.generic("POST", url(experiment, mode="replace"), CSV.encode(), content_type="text/csv")
    assert response.status_code == 409
    assert experiment.items.count() == 3


def test_an_unknown_experiment_is_a_404(api):
    assert (
        api.generic(
            "POST", "/api/experiments/999/dataset/", CSV.encode(), content_type="text/csv"
        ).status_code
        == 404
    )


def test_file_format_overrides_the_guess(api, experiment):
    response = api.generic(
        "POST", url(experiment, file_format="jsonl"), CSV.encode(), content_type="text/csv"
    )
    assert response.status_code == 400 and response.json()["dataset"][0].startswith("Line 1: not valid JSON")
    assert experiment.items.count() == 3


def test_a_file_over_the_row_limit_is_refused_and_nothing_changes(api, experiment, monkeypatch):
    monkeypatch.setattr("experiments.dataset_import.MAX_IMPORT_ROWS", 1)
    upload = SimpleUploadedFile("capitals.csv", CSV.encode(), content_type="text/csv")
    response = api.post(url(experiment), {"file": upload, "mode": "replace"}, format="multipart")
    assert response.status_code == 400
    assert "at most 1 at once" in json.dumps(response.json())
    assert len(rows(experiment)) == 3
