"""What `ScoringClient` raises: every error is a `ScoringError` naming its request."""

from __future__ import annotations


class ScoringError(Exception):
    """Base of every error `ScoringClient` raises; ``request_id`` names the request."""

    def __init__(self, request_id: str, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class ScoreTimeout(ScoringError, TimeoutError):
    """No answer within the wait. The request may still be answered: wait again with ``result(id)``."""


class DeadlineExceeded(ScoringError):
    """The worker answered ``status="timeout"``: the request's deadline passed before it was scored."""


class RequestRejected(ScoringError):
    """The worker answered ``status="rejected"`` (e.g. more candidates than the deployment allows)."""


class DeadLettered(ScoringError):
    """The request could not be read (invalid, unknown schema, oversized) and went to the dead-letter topic."""

    def __init__(self, request_id: str, reason: str, error_type: str) -> None:
        super().__init__(request_id, f"request {request_id} was dead-lettered ({error_type}): {reason}")
        self.reason = reason
        self.error_type = error_type


class BrokerUnavailable(ScoringError):
    """Kafka could not be reached or refused the write; the message says what to check."""
