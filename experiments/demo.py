"""The demo experiment a newcomer finds after `make run`: capitals of the world,
answered by the bundled local model under three prompts and three temperatures."""

from typing import Any

from django.db import transaction

from endpoints.models import Endpoint
from experiments.models import DatasetItem, Experiment
from projects.models import Project, Role

DEMO_NAME = "Demo: capitals of the world"
DEMO_PROJECT = "Demo"

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Brazil", "Brasília"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Portugal", "Lisbon"),
    ("Greece", "Athens"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"),
    ("Turkey", "Ankara"),
]

PROMPT_VARIANTS = [
    "What is the capital of {{ country }}?",
    "Name the capital city of {{ country }}. Reply with the city name only.",
    "Question: which city is the capital of {{ country }}?\nAnswer in one short sentence.",
]


def demo_definition() -> dict:
    return {
        "name": DEMO_NAME,
        "description": (
            "Which prompt and temperature make a small model name capitals correctly and briefly? "
            "Scored by the expected city (keyword), closeness to the reference answer (offline "
            "MiniLM embeddings) and answer length."
        ),
        "pipeline": [
            {
                "name": "answer",
                "system": "You are a concise geography assistant.",
                "user": PROMPT_VARIANTS[0],
                "params": {"max_tokens": 48},
            }
        ],
        "parameter_space": {"answer.user": PROMPT_VARIANTS, "temperature": [0.0, 0.7, 1.2]},
        "scorers": [
            {"type": "keyword", "weight": 2.0, "config": {"required_present": ["{{ capital }}"]}},
            {"type": "embedding", "weight": 1.0, "config": {}},
            {
                "type": "format",
                "weight": 0.5,
                "name": "length",
                "config": {"check": "length", "min_tokens": 1, "max_tokens": 15},
            },
        ],
    }


def demo_project(admin: Any = None) -> Project:
    """The project "Demo" (made once), administered by `admin` when given."""
    project = Project.objects.filter(name=DEMO_PROJECT).order_by("id").first()
    if project is None:
        project = Project.objects.create(name=DEMO_PROJECT)
    if admin is not None:
        project.memberships.update_or_create(user=admin, defaults={"role": Role.ADMIN})
    return project


@transaction.atomic
def load_demo(endpoint: Endpoint | None, project: Project | None = None) -> tuple[Experiment, bool]:
    """Create the demo experiment once in its project (the endpoint's, else "Demo");
    returns (experiment, created)."""
    project = endpoint.project if endpoint else (project or demo_project())
    existing = Experiment.objects.filter(project=project, name=DEMO_NAME).first()
    if existing:
        return existing, False
    experiment = Experiment(project=project, endpoint=endpoint, **demo_definition())
    experiment.full_clean()
    experiment.save()
    DatasetItem.objects.bulk_create(
        DatasetItem(
            experiment=experiment,
            position=i,
            input={"country": country, "capital": capital},
            reference=f"The capital of {country} is {capital}.",
        )
        for i, (country, capital) in enumerate(CAPITALS)
    )
    return experiment, True
