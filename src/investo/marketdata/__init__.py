"""Live market data: Binance stream messages built from applied batches (see :mod:`.service`)."""

from investo.marketdata.hub import Hub, Subscriber
from investo.marketdata.service import MarketData, market_streams

__all__ = ["Hub", "MarketData", "Subscriber", "market_streams"]
