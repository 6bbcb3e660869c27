from django.core.management.base import BaseCommand, CommandError

from runs.models import Sweep, SweepStateError
from runs.queue import distributed, wait_for_in_process_jobs


class Command(BaseCommand):
    help = "Resume a paused sweep, or one whose worker died, from the runs not yet done."

    def add_arguments(self, parser):
        parser.add_argument("sweep_id", type=int)
        parser.add_argument(
            "--recover",
            action="store_true",
            help="Also resume a sweep still marked running whose workers died: runs not "
            "heard from for SWEEP_STALE_AFTER_S seconds are taken back.",
        )

    def handle(self, *args, **options):
        sweep = Sweep.objects.filter(pk=options["sweep_id"]).first()
        if sweep is None:
            raise CommandError(f"No sweep #{options['sweep_id']}.")
        try:
            sweep.resume(recover=options["recover"])
        except SweepStateError as exc:
            raise CommandError(str(exc)) from None
        left = sweep.remaining_runs
        if distributed():
            self.stdout.write(f"Resumed sweep #{sweep.pk}: {left} run(s) to go, dispatched to workers.")
            return
        # Single-machine mode: this process is the worker, and its jobs die with it.
        self.stdout.write(f"Resumed sweep #{sweep.pk}: running its {left} remaining run(s) here...")
        wait_for_in_process_jobs()
        sweep.refresh_from_db()
        self.stdout.write(f"Sweep #{sweep.pk} is {sweep.status}: {sweep.completed_runs} run(s) completed.")
