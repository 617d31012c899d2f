"""jobscore: streaming batch scoring for semantic job search with small language models."""

__version__ = "0.1.0"
