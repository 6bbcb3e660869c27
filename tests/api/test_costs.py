"""Cost in money: endpoint prices over the API, the estimate's "at most", a budget in
money that stops a sweep like the token budget, and costs on the pages."""

import pytest
from django.urls import reverse

from runs.models import Sweep, SweepStatus
from tests.api.helpers import scored_run
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import quality_responder, wait_for_sweep

SPACE = {"temperature": [0.0, 1.0]}


def create(api, **fields):
    body = {"name": "openai", "base_url": "https://api.example.com/v1", "default_model": "big", **fields}
    return api.post("/api/endpoints/", body, format="json")


@pytest.mark.django_db
def test_an_endpoint_carries_its_prices_and_a_model_priced_apart(api):
    response = create(api, price_in=2.5, price_out=10, model_prices={"small": [0.15, 0.6]})
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["price_in"], data["price_out"], data["model_prices"]) == (2.5, 10.0, {"small": [0.15, 0.6]})


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, field",
    [
        ({"price_in": -1}, "price_in"),
        ({"price_out": "cheap"}, "price_out"),
        ({"model_prices": {"small": [0.15]}}, "model_prices"),
        ({"model_prices": {"small": [0.15, -2]}}, "model_prices"),
    ],
)
def test_a_bad_price_is_a_400_naming_the_field(api, fields, field):
    response = create(api, **fields)
    assert response.status_code == 400 and field in response.json()


@pytest.mark.django_db
def test_a_run_costs_its_tokens_at_its_models_prices():
    endpoint = make_endpoint(price_in=2.0, price_out=8.0, model_prices={"small": [0.5, 1.0]})
    experiment = make_experiment(endpoint)
    assert experiment.cost({}, 1_000_000, 500_000) == pytest.approx(2.0 + 4.0)  # the default model
    assert experiment.cost({"model": "small"}, 1_000_000, 500_000) == pytest.approx(0.5 + 0.5)
    assert make_experiment(make_endpoint("own"), name="Own").cost({}, 10**6, 10**6) == 0  # not priced


@pytest.fixture
def priced(llm_stub):
    """The stub served as a paid API: 1,000 per million tokens, so 1 per thousand."""
    llm_stub.responder = quality_responder
    endpoint = make_endpoint(base_url=llm_stub.base_url, price_in=1000, price_out=1000)
    return make_experiment(endpoint, parameter_space=SPACE)


@pytest.mark.django_db
def test_the_estimate_says_what_the_sweep_costs_at_most(api, priced):
    data = api.post(f"/api/experiments/{priced.pk}/sweep/", {"dry_run": True}, format="json").json()
    assert data["estimate"]["max_cost"] == pytest.approx(data["estimate"]["max_tokens"] / 1000)


@pytest.mark.django_db(transaction=True)
def test_a_money_budget_stops_the_sweep_like_the_token_budget(api, priced):
    body = {"max_cost": 0.05, "max_concurrent": 1}  # 50 tokens at this price
    response = api.post(f"/api/experiments/{priced.pk}/sweep/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["token_budget"] == 50
    sweep = wait_for_sweep(Sweep.objects.get(pk=response.json()["id"]))
    assert sweep.status == SweepStatus.BUDGET_EXHAUSTED and sweep.config["max_cost"] == 0.05


@pytest.mark.django_db
def test_a_negative_money_budget_is_a_400(api, priced):
    response = api.post(f"/api/experiments/{priced.pk}/sweep/", {"max_cost": -1}, format="json")
    assert response.status_code == 400 and "max_cost" in response.json()


@pytest.mark.django_db
def test_the_pages_show_costs_and_their_total(client, alice):
    client.force_login(alice)
    experiment = make_experiment(make_endpoint(price_in=1000, price_out=1000), parameter_space=SPACE)
    sweep = Sweep.objects.create(experiment=experiment, status=SweepStatus.COMPLETED, total_runs=2)
    runs = [
        scored_run(
            experiment, {"temperature": t}, {"keyword": [1, 1, 1]}, sweep=sweep, tokens_in=n, tokens_out=0
        )
        for t, n in ((0.0, 1200), (1.0, 3000))
    ]
    board = client.get(reverse("ui:leaderboard", args=[experiment.pk])).content.decode()
    assert "1.20 USD" in board and "3.00 USD" in board
    assert "Cost of these 2 configurations: <strong>4.20 USD</strong>" in board
    assert (
        '<dd id="run-cost">1.20 USD</dd>' in client.get(reverse("ui:run", args=[runs[0].pk])).content.decode()
    )
    assert '<dd id="sweep-cost">4.20 USD' in client.get(reverse("ui:sweep", args=[sweep.pk])).content.decode()
    assert 'id="cost-chart"' in client.get(reverse("ui:charts", args=[experiment.pk])).content.decode()


@pytest.mark.django_db
def test_the_report_prices_the_top_configurations_and_every_run(api):
    experiment = make_experiment(make_endpoint(price_in=1000, price_out=1000), parameter_space=SPACE)
    scored_run(experiment, {"temperature": 0.0}, {"keyword": [1, 1, 1]}, tokens_in=1200, tokens_out=0)
    scored_run(experiment, {"temperature": 1.0}, {"keyword": [0, 1, 0]}, tokens_in=3000, tokens_out=0)
    text = api.get(f"/api/experiments/{experiment.pk}/report/").content.decode()
    assert "| cost (USD) |" in text and "| 1.2000 |" in text
    assert "Cost of these 2: 4.2000 USD." in text and "- Cost: 4.2000 USD" in text
