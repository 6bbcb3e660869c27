import signal
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from engine.sweep import SWEEPS
from experiments.models import Experiment
from runs import gate
from runs.models import Sweep, SweepStateError
from runs.queue import distributed, wait_for_in_process_jobs
from runs.sweeps import SweepRequest, SweepRequestError, launch_sweep

POLL_S = 0.5  # how often a waiting gate looks at the sweep (workers update it)
ERROR, FAILED = 2, 1  # exit codes: could not run or judge; ran, and the gate does not hold


def find_experiment(ref: str, project: int | None) -> Experiment:
    experiments = Experiment.objects.select_related("endpoint")
    if project is not None:
        experiments = experiments.filter(project_id=project)
    found = list(experiments.filter(pk=int(ref)) if ref.isdigit() else experiments.filter(name=ref)[:2])
    if len(found) != 1:
        how = "several experiments are" if found else "no experiment is"
        raise CommandError(f"{how} '{ref}'; give its id, or --project with its name.", returncode=ERROR)
    return found[0]


def sweep_request(experiment: Experiment, options: dict[str, Any]) -> SweepRequest:
    """The experiment's sweep defaults, with what the command line says on top."""
    defaults = dict(experiment.sweep_defaults or {})
    if options["type"]:
        defaults["type"] = options["type"]
    return SweepRequest(
        type=defaults.get("type", "grid"),
        n_samples=defaults.get("n_samples"),
        seed=defaults.get("seed"),
        repeats=defaults.get("repeats") or 1,
        max_concurrent=defaults.get("max_concurrent"),
        max_tokens=defaults.get("max_tokens"),
        options=defaults.get("options") or None,
    )


class Command(BaseCommand):
    help = (
        "Run a sweep of an experiment and gate on it: exit 0 when the gate holds, 1 when the best "
        "score is under --fail-under or regressed from --baseline, 2 on an error."
    )

    def add_arguments(self, parser):
        parser.add_argument("experiment", help="The experiment's id, or its name.")
        parser.add_argument("--project", type=int, help="The project, to find an experiment by name.")
        parser.add_argument("--type", choices=sorted(SWEEPS), help="Default: the experiment's sweep type.")
        parser.add_argument("--wait", action="store_true", help="Wait for the sweep (implied by the gate).")
        parser.add_argument("--fail-under", type=float, help="Fail when the best weighted score is below.")
        parser.add_argument("--baseline", type=int, help="A sweep id to compare the best score with.")
        parser.add_argument(
            "--max-regression", type=float, default=0.0, help="Allowed drop from the baseline."
        )
        parser.add_argument("--junit", type=Path, help="Write JUnit XML: one test case per dataset row.")
        parser.add_argument("--json", type=Path, help="Write the verdict and the leaderboard as JSON.")
        parser.add_argument("--timeout", type=float, help="Give up waiting after this many seconds (exit 2).")

    def execute(self, *args: Any, **options: Any) -> Any:
        # Anything unexpected is an error of the gate (2), reported on one line, not a traceback.
        try:
            return super().execute(*args, **options)
        except CommandError:
            raise
        except Exception as exc:  # noqa: BLE001 - the CI job needs exit code 2 and one line
            raise CommandError(f"{type(exc).__name__}: {exc}", returncode=ERROR) from exc

    def handle(self, *args: Any, **options: Any) -> None:
        experiment = find_experiment(options["experiment"], options["project"])
        baseline = self.baseline(options["baseline"])
        sweep = self.launch(experiment, sweep_request(experiment, options))
        gated = any(options[k] is not None for k in ("fail_under", "baseline", "junit", "json"))
        if not (options["wait"] or gated):
            self.stdout.write(f"Launched sweep #{sweep.pk} of '{experiment.name}': {sweep.total_runs} runs.")
            return
        sweep = self.wait(sweep, options["timeout"])
        try:
            verdict = gate.judge(sweep, options["fail_under"], baseline, options["max_regression"])
        except gate.GateError as exc:
            raise CommandError(str(exc), returncode=ERROR) from None
        self.report(verdict, experiment, options)

    def baseline(self, sweep_id: int | None) -> Sweep | None:
        if sweep_id is None:
            return None
        sweep = Sweep.objects.filter(pk=sweep_id).first()
        if sweep is None:
            raise CommandError(f"No baseline sweep #{sweep_id}.", returncode=ERROR)
        return sweep

    def launch(self, experiment: Experiment, request: SweepRequest) -> Sweep:
        try:
            return launch_sweep(experiment, request)
        except SweepRequestError as exc:
            raise CommandError(f"{exc.field}: {exc}", returncode=ERROR) from None
        except SweepStateError as exc:
            raise CommandError(str(exc), returncode=ERROR) from None

    def wait(self, sweep: Sweep, timeout: float | None) -> Sweep:
        """Until the sweep finishes; SIGTERM (a cancelled CI job) stops it first."""
        previous = signal.signal(signal.SIGTERM, lambda *_: self.interrupt(sweep))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if not distributed():
                wait_for_in_process_jobs(timeout)
            while sweep.is_active:
                if deadline is not None and time.monotonic() > deadline:
                    sweep.stop()
                    raise CommandError(f"Sweep #{sweep.pk} ran past --timeout; stopped.", returncode=ERROR)
                time.sleep(POLL_S)
                sweep.refresh_from_db()
        finally:
            signal.signal(signal.SIGTERM, previous)
        sweep.refresh_from_db()
        return sweep

    def interrupt(self, sweep: Sweep) -> None:
        sweep.stop()
        raise CommandError(f"Interrupted; sweep #{sweep.pk} stopped.", returncode=ERROR)

    def report(self, verdict: gate.Verdict, experiment: Experiment, options: dict[str, Any]) -> None:
        self.stdout.write(gate.table(verdict.leaderboard))
        if options["json"]:
            options["json"].write_text(gate.as_json(verdict), encoding="utf-8")
        if options["junit"]:
            options["junit"].write_bytes(gate.junit(verdict, experiment, options["fail_under"]))
        if not verdict.passed:
            raise CommandError("Gate failed: " + "; ".join(verdict.reasons), returncode=FAILED)
        self.stdout.write(
            f"Gate holds: sweep #{verdict.sweep} ({verdict.status}), best score {verdict.best_score:.4f}."
        )
