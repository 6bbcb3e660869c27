from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "webhooks"

    def ready(self) -> None:
        # Webhooks sit above runs: they subscribe to its event bus and recovery.
        from runs.events import listen
        from runs.sweeps import add_recovery
        from webhooks.tasks import dispatch_event, recover_deliveries

        listen(dispatch_event)
        add_recovery(recover_deliveries)
