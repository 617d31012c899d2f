"""The contracts: versioned msgspec messages for every topic, the topics declared once, and the stored
summary format (record, Redis key, content hash) the two services share.

Layer: ground. Imports nothing of ours; everything else may import it.
"""

from schemas.messages import (
    CandidateError,
    DeadLetter,
    JobPosted,
    JobSummarized,
    Message,
    Ranking,
    ScoredJob,
    ScoreRequest,
    Timings,
    posting_from_row,
)
from schemas.summary import SummaryRecord, content_hash, summary_key
from schemas.topics import (
    DEAD_LETTERS,
    POSTINGS,
    RANKINGS,
    SCORE_REQUESTS,
    SCORE_REQUESTS_BULK,
    SUMMARIES,
    SchemaError,
    TopicSpec,
)

__all__ = [
    "DEAD_LETTERS",
    "POSTINGS",
    "RANKINGS",
    "SCORE_REQUESTS",
    "SCORE_REQUESTS_BULK",
    "SUMMARIES",
    "CandidateError",
    "DeadLetter",
    "JobPosted",
    "JobSummarized",
    "Message",
    "Ranking",
    "SchemaError",
    "ScoreRequest",
    "ScoredJob",
    "SummaryRecord",
    "Timings",
    "TopicSpec",
    "content_hash",
    "posting_from_row",
    "summary_key",
]
