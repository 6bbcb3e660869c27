from django.apps import AppConfig


class RunsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "runs"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from runs.aggregates import run_deleted
        from runs.models import Run, Sweep

        post_delete.connect(run_deleted, sender=Run, dispatch_uid="runs.run_deleted")
        # The experiment's report shows its sweeps and runs: a new or changed one forgets it.
        for model in (Sweep, Run):
            post_save.connect(forget_report_of_child, sender=model, dispatch_uid=f"report.{model.__name__}")


def forget_report_of_child(sender: type, instance: object, **kwargs: object) -> None:
    from experiments.models import Report

    Report.forget(instance.experiment_id)
