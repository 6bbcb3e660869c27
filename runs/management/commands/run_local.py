"""`make run`: everything a newcomer needs, on one machine, stopped cleanly by Ctrl-C."""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from endpoints.models import Endpoint
from experiments.demo import demo_project, load_demo
from runs.local_build import BUILDING, FAILED, READY, Build, log_file, quoted

LOCAL_ENDPOINT = "local-smollm2"
PASSWORD_FILE = Path(settings.VAR_DIR) / "admin-password.txt"
PROGRESS_EVERY_S = 15  # how often the terminal says how the model's build is going


class Command(BaseCommand):
    help = "Migrate, create an admin, load the demo, and run the web server, a worker and the local model."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--model-port", type=int, default=int(os.environ.get("LOCAL_MODEL_PORT", "8765")))
        parser.add_argument("--no-local-model", action="store_true", help="Do not start the bundled model.")
        parser.add_argument(
            "--no-demo-sweep", action="store_true", help="Load the demo but do not launch it."
        )

    def handle(self, *args, **options):
        self.children: list[subprocess.Popen] = []
        self.model_server = None
        self.build: Build | None = None
        # Both explicitly: a shell that starts us in the background ignores SIGINT.
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown(0))
        signal.signal(signal.SIGINT, lambda *_: self.shutdown(0))
        call_command("migrate", verbosity=0)
        username, password = self.ensure_admin()
        self.project = demo_project(get_user_model().objects.get(username=username))
        self.experiment, _ = load_demo(None, self.project)
        self.options, self.username = options, username
        if not options["no_local_model"]:
            # The pages first: the model builds (or, once built, checks out in seconds) meanwhile.
            self.build = Build().start()
            self.stdout.write(f"Building the bundled model in the background: {quoted(self.build.command)}")
        if settings.REDIS_URL:
            # --with-scheduler: webhook retries are scheduled (rq's Retry), not slept.
            self.spawn(
                [sys.executable, "manage.py", "rqworker", "default", "sweeps", "webhooks", "--with-scheduler"]
            )
        self.url = f"http://{options['host']}:{options['port']}"
        self.spawn(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                options["host"],
                "-p",
                str(options["port"]),
                "promptlooper_site.asgi:application",
            ]
        )
        self.wait_for(self.url + "/accounts/login/")
        self.stdout.write(self.style.SUCCESS(f"\nPromptLooper is running at {self.url}/"))
        self.stdout.write(f"  log in as {username} / {password}   (password kept in {PASSWORD_FILE})")
        self.stdout.write(
            f"  demo experiment: {self.url}/experiments/{self.experiment.pk}/   admin: {self.url}/admin/"
        )
        self.stdout.write("  Ctrl-C stops everything.\n")
        self.stdout.flush()
        self.serve()

    def serve(self) -> None:
        said = 0.0
        while all(child.poll() is None for child in self.children) and self.model_alive():
            if self.build is not None and self.build.status.state == BUILDING:
                status = self.build.poll()
                if status.state != BUILDING or time.monotonic() - said >= PROGRESS_EVERY_S:
                    said = time.monotonic()
                    self.stdout.write(f"Local model: {status.state}, {status.elapsed}: {status.step}")
                    self.stdout.flush()
                if status.state == READY:
                    self.model_ready()
                elif status.state == FAILED:
                    self.stderr.write(f"The local model's build failed; its log: {log_file()}")
            time.sleep(0.5)
        self.shutdown(1, "A process stopped unexpectedly; shutting down.")

    def model_ready(self) -> None:
        """Serve the model, give the demo its endpoint and start the demo sweep."""
        try:
            endpoint = self.start_local_model(self.options["model_port"], self.project)
        except CommandError as exc:  # built, yet not found: the pages keep running without it
            self.stderr.write(f"The local model could not start: {exc}")
            return
        if self.experiment.endpoint_id is None:
            self.experiment.endpoint = endpoint
            self.experiment.save(update_fields=["endpoint"])
        if not self.options["no_demo_sweep"] and not self.experiment.sweeps.exists():
            self.launch_demo(self.url, self.username, self.experiment.pk)

    def ensure_admin(self) -> tuple[str, str]:
        User = get_user_model()
        if not PASSWORD_FILE.exists() or not User.objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            PASSWORD_FILE.parent.mkdir(exist_ok=True)
            PASSWORD_FILE.write_text(password + "\n")
            PASSWORD_FILE.chmod(0o600)
            user = User.objects.filter(username="admin").first() or User(
                username="admin", is_staff=True, is_superuser=True
            )
            user.set_password(password)
            user.save()
        return "admin", PASSWORD_FILE.read_text().strip()

    def start_local_model(self, port: int, project) -> Endpoint:
        from engine.local_model import SMOLLM_ALIAS, LocalModelMissing, LocalModelServer

        try:
            server = LocalModelServer(port=port)
        except LocalModelMissing as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Starting the bundled model ({SMOLLM_ALIAS}) on port {port}...")
        self.model_server = server.start()
        endpoint, _ = Endpoint.objects.update_or_create(
            project=project,
            name=LOCAL_ENDPOINT,
            defaults={
                "base_url": server.base_url,
                "default_model": SMOLLM_ALIAS,
                "max_concurrency": 1,
                "timeout_s": 120,
            },
        )
        return endpoint

    def launch_demo(self, url: str, username: str, experiment_id: int) -> None:
        # Through the web server, so its in-process worker runs the sweep and its
        # live view sees the events.
        token, _ = Token.objects.get_or_create(user=get_user_model().objects.get(username=username))
        response = httpx.post(
            f"{url}/api/experiments/{experiment_id}/sweep/",
            json={"type": "grid"},
            headers={"Authorization": f"Token {token.key}"},
            timeout=60,
        )
        if response.status_code == 201:
            sweep = response.json()
            self.stdout.write(
                f"Launched the demo sweep #{sweep['id']}: {sweep['total_runs']} configurations."
            )
        else:
            self.stderr.write(
                f"Could not launch the demo sweep: {response.status_code} {response.text[:300]}"
            )

    def spawn(self, command: list[str]) -> None:
        self.children.append(subprocess.Popen(command, cwd=settings.BASE_DIR))

    def wait_for(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.shutdown(1, f"The web server did not answer at {url}")

    def model_alive(self) -> bool:
        return self.model_server is None or self.model_server.running

    def shutdown(self, code: int, message: str = "") -> None:
        if self.build is not None:
            self.build.stop()
        if self.model_server is not None:
            self.model_server.stop()
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if message:
            self.stderr.write(message)
        self.stdout.write("Stopped the web server, worker and local model.")
        sys.exit(code)
