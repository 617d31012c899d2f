"""The wire format: versioned msgspec messages for every topic, and the topics declared once."""

from schemas.messages import (
    CandidateError,
    DeadLetter,
    JobPosted,
    Message,
    Ranking,
    ScoredJob,
    ScoreRequest,
    Timings,
)
from schemas.topics import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, SchemaError, TopicSpec

__all__ = [
    "DEAD_LETTERS",
    "POSTINGS",
    "RANKINGS",
    "SCORE_REQUESTS",
    "CandidateError",
    "DeadLetter",
    "JobPosted",
    "Message",
    "Ranking",
    "SchemaError",
    "ScoreRequest",
    "ScoredJob",
    "Timings",
    "TopicSpec",
]
