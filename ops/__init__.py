"""The operator tools: `jobscore status` (lag in records and pairs, rates, cache), the request and postings
ledgers, dead letters (list, show, re-drive), the capacity model, the contract export, score backfills and
the embedded dev stack. They read the deployment from outside (broker, Redis); no service imports them.

Layer: tools. Imports schemas, the client (the one Kafka access point, the scoring client) and the runtime
base (settings, Kafka factories); never the services, compress, bench or the console app.
"""
