"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "promptlooper_site.settings")
django_asgi_app = get_asgi_application()  # before importing consumers: it sets up the apps

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from runs.routing import websocket_urlpatterns  # noqa: E402
from runs.sweeps import start_recovery  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The app serves its own static files: nothing outside the machine is needed.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# A server that starts after a crash finishes the sweeps it (or a dead worker) left running.
start_recovery()
