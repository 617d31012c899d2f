"""The publishers' library (distribution ``jobscore-client``): publish postings and scoring requests, await
rankings, and the one Kafka access point every part of the project uses (client/kafka.py).

Layer: above ``schemas/`` only — it imports nothing else of ours, and needs only aiokafka and msgspec, so a
publisher installs it without the scoring engine (Python 3.9+). The services and operator tools build on it.
"""

from client.config import ClientConfig, ConfigSource, HasClientConfig, TopicNames, as_config
from client.errors import (
    BrokerUnavailable,
    DeadLettered,
    DeadlineExceeded,
    RequestRejected,
    ScoreTimeout,
    ScoringError,
)
from client.publish import Lane, ScoringClient, new_request, new_traceparent, publish_postings, publish_requests, tail
from client.results import RankingWaiter, ReaderStats, ResultsReader
from client.summaries import NotSummarized, wait_summarized
from client.sync import SyncScoringClient

__all__ = [
    "BrokerUnavailable",
    "ClientConfig",
    "ConfigSource",
    "DeadLettered",
    "DeadlineExceeded",
    "HasClientConfig",
    "Lane",
    "NotSummarized",
    "RankingWaiter",
    "ReaderStats",
    "RequestRejected",
    "ResultsReader",
    "ScoreTimeout",
    "ScoringClient",
    "ScoringError",
    "SyncScoringClient",
    "TopicNames",
    "as_config",
    "new_request",
    "new_traceparent",
    "publish_postings",
    "publish_requests",
    "tail",
    "wait_summarized",
]
