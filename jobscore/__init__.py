"""jobscore's runtime base, shared by the services: typed settings, Kafka access for services (client/'s
factories with the services' timeouts, dead letters, the broker-loss guard), topic plan and admin, the Redis
summary cache, retry, health, metrics and logging.

Layer: base. Imports schemas and client (the one Kafka access point) only; the services, the operator tools,
the offline tools and the console app build on it.
"""

__version__ = "0.1.0"
