from django.apps import AppConfig
from django.conf import settings
from django.core.signals import setting_changed


def configure_template_limits(**kwargs) -> None:
    """The engine's render limits from the settings (again when a test overrides one)."""
    from engine.templates import RenderLimits, configure

    if kwargs.get("setting", "TEMPLATE_").startswith("TEMPLATE_"):
        configure(
            RenderLimits(
                loop_iterations=settings.TEMPLATE_MAX_LOOP_ITERATIONS,
                output_chars=settings.TEMPLATE_MAX_OUTPUT_CHARS,
                seconds=settings.TEMPLATE_MAX_RENDER_S,
            )
        )


class ExperimentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "experiments"

    def ready(self) -> None:
        configure_template_limits()
        setting_changed.connect(configure_template_limits)
        from django.db.models.signals import post_save

        from experiments.models import Experiment

        # What the report shows changed: an edit (the runs app forgets it on a new
        # sweep or run; their completions, ratings and deletions in runs/aggregates.py).
        post_save.connect(forget_report_of_experiment, sender=Experiment, dispatch_uid="report.experiment")


def forget_report_of_experiment(sender: type, instance: object, **kwargs: object) -> None:
    from experiments.models import Report

    Report.forget(instance.pk)
