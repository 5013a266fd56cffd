"""The data flow between a feed, the store and the hub.

* :class:`Ingestor` (:mod:`~candlewire.flow.ingest`): a feed's events ->
  aggregation -> the store, then the hub of this process.
* :class:`LeasedIngestion` (:mod:`~candlewire.flow.lease`): runs ingestion
  only while this process holds the shard's lease in a shared store.
* :class:`UpdateReader` (:mod:`~candlewire.flow.follow`): a serving
  replica's follower of the store's update log, into its hub and caches.
"""

from candlewire.flow.follow import UpdateReader
from candlewire.flow.ingest import Ingestor
from candlewire.flow.lease import LeasedIngestion, owner_name

__all__ = ["Ingestor", "LeasedIngestion", "UpdateReader", "owner_name"]
