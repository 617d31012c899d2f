"""Scoring workers: consume requests, fetch summaries, score with the SLM, publish rankings."""
