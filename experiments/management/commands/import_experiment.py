from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from experiments import definition
from experiments.promptfoo import import_promptfoo
from projects.models import Project


def project_for(project_id: int | None) -> Project:
    """The named project, or the only one there is."""
    if project_id is not None:
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise CommandError(
                f"No project #{project_id}; `python manage.py shell` lists Project.objects.all()."
            )
        return project
    projects = list(Project.objects.order_by("id")[:2])
    if len(projects) != 1:
        raise CommandError("Say which project with --project ID (there is not exactly one).")
    return projects[0]


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read the file: {exc}") from None


class Command(BaseCommand):
    help = "Create (or with --update, replace) an experiment from a definition file or a promptfoo config."

    def add_arguments(self, parser):
        parser.add_argument("path", help="A definition file (YAML or JSON), or promptfooconfig.yaml.")
        parser.add_argument("--project", type=int, help="The project's id (default: the only project).")
        parser.add_argument("--update", action="store_true", help="Replace the experiment of that name.")
        parser.add_argument("--format", choices=("definition", "promptfoo"), default="definition")

    def handle(self, *args, **options):
        project = project_for(options["project"])
        path = Path(options["path"])
        try:
            if options["format"] == "promptfoo":
                text = read_text(path)
                imported = import_promptfoo(text, project, None, str(path), path.parent, options["update"])
            else:
                imported = definition.import_definition(
                    definition.read_file(path), project, None, options["update"]
                )
        except (definition.DefinitionError, definition.DefinitionConflict) as exc:
            raise CommandError(str(exc)) from None
        for note in imported.notes:
            self.stderr.write(f"not imported: {note['location']}: {note['item']} ({note['reason']})")
        experiment = imported.experiment
        verb = "Created" if imported.created else "Updated"
        self.stdout.write(
            f"{verb} experiment '{experiment.name}' (#{experiment.pk}) in project '{project.name}' "
            f"with {experiment.items.count()} dataset rows; {len(imported.notes)} thing(s) not imported."
        )
