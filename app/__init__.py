"""The ``jobscore`` console app: one subcommand module per area, the demo.

`app.cli` is the entry point; `app.commands` is the one helper for building commands (settings ⇄
flags, run until a signal). Layer: top. May import everything; nothing imports it.
"""
