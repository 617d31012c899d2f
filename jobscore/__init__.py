"""jobscore's base layer: typed settings, Kafka clients and topic admin, the Redis summary cache,
metrics, logging, the client library and the embedded dev stack.

Layer: base. Imports schemas only; the services, offline tools and the console app build on it.
"""

__version__ = "0.1.0"
