from django.urls import path

from hives.consumers import HiveConsumer
from hives.protocol import HIVE_WS_PATH

websocket_urlpatterns = [
    path(HIVE_WS_PATH.lstrip("/"), HiveConsumer.as_asgi()),
]
