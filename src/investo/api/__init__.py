"""The Binance-dialect REST API and its conversions at the edge."""
