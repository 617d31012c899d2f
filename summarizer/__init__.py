"""Summarizer service: compress job descriptions once, when posted, into the Redis summary cache."""
