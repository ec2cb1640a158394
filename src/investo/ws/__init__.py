"""The WebSocket gateway (Binance market streams); see :mod:`investo.ws.gateway`.

Modules: :mod:`.gateway` (routes, control messages), :mod:`.client` (one connection's
subscriptions and output, the fan-out's per-client half), :mod:`.frames` (frames built
once), :mod:`.protocol` (uvicorn's protocol with a direct path for those frames).
"""
