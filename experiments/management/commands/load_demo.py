from django.core.management.base import BaseCommand, CommandError

from endpoints.models import Endpoint
from experiments.demo import load_demo


class Command(BaseCommand):
    help = "Load the demo experiment (capitals of the world), once."

    def add_arguments(self, parser):
        parser.add_argument("--endpoint", default="", help="Name of the endpoint the demo uses.")

    def handle(self, *args, **options):
        endpoint = None
        if options["endpoint"]:
            endpoint = Endpoint.objects.filter(name=options["endpoint"]).first()
            if endpoint is None:
                raise CommandError(f"No endpoint named {options['endpoint']!r}; create it first.")
        experiment, created = load_demo(endpoint)
        verb = "Loaded" if created else "Already present:"
        self.stdout.write(f"{verb} demo experiment #{experiment.pk} ({experiment.items.count()} rows)")
