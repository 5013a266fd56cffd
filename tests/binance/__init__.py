"""Tests of the Binance and replay feeds against a local test exchange."""
