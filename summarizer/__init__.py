"""Summarizer service: compress job descriptions once, when posted, into the Redis summary cache.

Layer: service. Imports schemas, engine (the abstractive mode's vLLM) and jobscore; never worker (the two
services meet only in schemas and Redis keys).
"""
