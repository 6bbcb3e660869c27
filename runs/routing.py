"""WebSocket routes (Channels)."""

from django.urls import path

from runs.consumers import AllEventsConsumer, ExperimentEventsConsumer

websocket_urlpatterns = [
    path("ws/experiments/<int:experiment_id>/", ExperimentEventsConsumer.as_asgi()),
    path("ws/events/", AllEventsConsumer.as_asgi()),
]
