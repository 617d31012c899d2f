"""Scoring workers: consume requests, fetch summaries, score with the SLM, publish rankings.

`worker.loop` is the whole data path, top to bottom. Layer: service. Imports schemas, engine and
jobscore; never summarizer (the two services meet only in schemas and Redis keys).
"""
