"""The gRPC API: servicers, request validation, tokens and status codes."""

from candlewire.api.server import ApiServer, Catalog
from candlewire.api.servicer import MarketDataServicer

__all__ = ["ApiServer", "Catalog", "MarketDataServicer"]
