from django.core.management.base import BaseCommand, CommandError

from endpoints.models import Endpoint
from experiments.demo import DEMO_PROJECT, demo_project, load_demo
from projects.models import Project


class Command(BaseCommand):
    help = "Load the demo experiment (capitals of the world), once, into a project."

    def add_arguments(self, parser):
        parser.add_argument(
            "--project", type=int, help=f"Project id (default: the project '{DEMO_PROJECT}')."
        )
        parser.add_argument("--endpoint", default="", help="Name of the project's endpoint the demo uses.")

    def handle(self, *args, **options):
        if options["project"] is not None:
            project = Project.objects.filter(pk=options["project"]).first()
            if project is None:
                raise CommandError(f"No project #{options['project']}.")
        else:
            project = demo_project()
        endpoint = None
        if options["endpoint"]:
            endpoint = Endpoint.objects.filter(project=project, name=options["endpoint"]).first()
            if endpoint is None:
                raise CommandError(
                    f"Project '{project}' has no endpoint named {options['endpoint']!r}; create it first."
                )
        experiment, created = load_demo(endpoint, project)
        verb = "Loaded" if created else "Already present:"
        self.stdout.write(
            f"{verb} demo experiment #{experiment.pk} ({experiment.items.count()} rows) in '{project}'"
        )
