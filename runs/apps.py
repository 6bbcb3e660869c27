from django.apps import AppConfig


class RunsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "runs"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from runs.aggregates import run_deleted
        from runs.models import Run

        post_delete.connect(run_deleted, sender=Run, dispatch_uid="runs.run_deleted")
