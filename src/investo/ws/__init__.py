"""The WebSocket gateway (Binance market streams); see :mod:`investo.ws.gateway`."""

from investo.ws.gateway import WsClient, handle_control, mount_ws

__all__ = ["WsClient", "handle_control", "mount_ws"]
