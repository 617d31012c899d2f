"""Building `jobscore` subcommands: settings ⇄ flags, and running a service until a signal.

Every command module in app/ uses these, so each setting is a flag and a ``JOBSCORE_<NAME>`` variable
the same way everywhere, and every long-running command stops the same way on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import types
import typing
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from jobscore.settings import ToolSettings

log = logging.getLogger("jobscore")

T = TypeVar("T")
S = TypeVar("S", bound=ToolSettings)

# The `add` helper each command module's `register(sub, add)` receives: (name, fn, help, settings model).
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str, type[BaseModel]], argparse.ArgumentParser]


def add_settings_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], *, show_deployment: bool = True
) -> None:
    """One flag per setting. ``show_deployment=False``: the deployment settings (`DEPLOYMENT_SETTINGS`: topic
    creation, group timing, health, retries) are accepted but left out of --help (``--help-all`` lists them).
    Secrets (`SECRET_SETTINGS`) get no flag: ``--<name>-file`` or the environment."""
    from jobscore.settings import DEPLOYMENT_SETTINGS, SECRET_SETTINGS

    group = parser.add_argument_group("settings (flag or environment variable)")
    for name, f in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"JOBSCORE_{name.upper()}"
        if name in SECRET_SETTINGS:
            # The bare flag is refused (without echoing the value), not left to argparse, which would take it
            # for an abbreviation of --<name>-file.
            group.add_argument(flag, dest=f"refused_{name}", action=_RefusedSecretFlag, help=argparse.SUPPRESS)
            group.add_argument(
                f"{flag}-file",
                dest=f"s_{name}_file",
                default=None,
                metavar="PATH",
                help=f"{f.description or ''} Read from this file, or from the environment ({env}, or a path in "
                f"{env}_FILE); never a flag's value, which `ps` and shell history would show.".replace("%", "%%"),
            )
            continue
        # A secret's default is shown as its masked display (``**********``; a URL with the password
        # masked), never its value: --help output ends up in tickets and CI logs.
        shown = str(f.default) if isinstance(f.default, SecretStr) else repr(f.default)
        help_ = f"{f.description or ''} [env {env}; default {shown}]".replace("%", "%%")
        if not show_deployment and name in DEPLOYMENT_SETTINGS:
            help_ = argparse.SUPPRESS
        ann = f.annotation
        if ann is bool:
            group.add_argument(flag, dest=f"s_{name}", action=argparse.BooleanOptionalAction, default=None, help=help_)
            continue
        choices = None
        args = typing.get_args(ann)
        if typing.get_origin(ann) is typing.Literal:
            choices = list(args)
        elif isinstance(ann, types.UnionType) and all(a is type(None) or a is Path for a in args):
            pass
        group.add_argument(flag, dest=f"s_{name}", default=None, choices=choices, metavar=name.upper(), help=help_)


class _RefusedSecretFlag(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        env = "JOBSCORE_" + self.dest.removeprefix("refused_").upper()
        parser.error(
            f"{opt} is not accepted as a flag (a flag's value shows in `ps` and shell history): set {env}, "
            f"{env}_FILE=/path/to/file or {opt}-file /path/to/file"
        )


def settings_from(ns: argparse.Namespace, model: type[S]) -> S:
    """The settings from flags over ``JOBSCORE_*`` variables. An invalid combination exits with pydantic's
    message (it names the setting and what to set; it never echoes the input, which may be a secret)
    instead of a traceback."""
    overrides = {k[2:]: v for k, v in vars(ns).items() if k.startswith("s_") and v is not None}
    try:
        return model(**overrides)
    except ValidationError as e:
        raise SystemExit(f"jobscore: invalid settings: {e}") from None


def command_settings(ns: argparse.Namespace, model: type[S], *, quiet: bool = False) -> S:
    """What every command starts with: its settings (`settings_from`) and logging set up from them.
    ``quiet``: a command that prints its own report logs from WARNING unless another level is asked for."""
    from jobscore.settings import setup_logging

    s = settings_from(ns, model)
    setup_logging("WARNING" if quiet and s.log_level == "INFO" else s.log_level, s.log_format)
    return s


# Exit codes of a service command that stopped on a failure (docs/operating.md "Exit codes").
EXIT_FAILED = 1  # anything unexpected (the traceback is logged)
EXIT_BROKER_LOST = 3  # the broker lost our topics: nothing unanswered was committed; a restart recovers
EXIT_ENGINE_FAILED = 4  # the engine cannot score (device lost): another replica answers what is uncommitted
EXIT_KAFKA_UNREACHABLE = 5  # no broker answered with the configured address and transport security


def service_failed(name: str, e: BaseException) -> int:
    """One ERROR line (no traceback for the failures the services expect) and the command's exit code."""
    from jobscore.kafka import BrokerLost, KafkaUnreachable
    from worker.scoring import EngineFailure

    known = {
        BrokerLost: (
            EXIT_BROKER_LOST,
            "nothing unanswered was committed; on restart the topics are re-created and the group replays",
        ),
        EngineFailure: (EXIT_ENGINE_FAILED, "nothing unanswered was committed; another replica answers it"),
        KafkaUnreachable: (EXIT_KAFKA_UNREACHABLE, "check the address and the transport security settings"),
    }
    for kind, (code, what) in known.items():
        if isinstance(e, kind):
            log.error(f"{name} stopped: {e} ({what}; exit {code})", extra={"error_class": type(e).__name__})
            return code
    log.error(f"{name} stopped on an unexpected error (exit {EXIT_FAILED})", exc_info=e)
    return EXIT_FAILED


def run_service_command(name: str, main: Callable[[asyncio.Event], Coroutine[Any, Any, int | None]]) -> int:
    """`run_until_signal` for a service: a failure it stops on becomes one ERROR line and an exit code."""
    try:
        return run_until_signal(main)
    except Exception as e:
        return service_failed(name, e)


def serve_health(port: int) -> bool:
    """/metrics, /healthz and /readyz on ``port`` (0: off). False, with one line saying what to do, when the
    port is taken (another service on this host): the service must not run without the endpoints it promises."""
    from jobscore import metrics

    try:
        metrics.serve(port)
    except OSError as e:
        log.error(
            f"cannot serve /metrics, /healthz and /readyz on port {port}: {e.strerror or e}; give this service its "
            "own port (--metrics-port, JOBSCORE_METRICS_PORT) or 0 to turn the endpoints off"
        )
        return False
    return True


class StartupInterrupted(BaseException):
    """SIGINT/SIGTERM arrived while a blocking start-up step (loading an engine) was running. A
    BaseException, like KeyboardInterrupt, so a library's ``except Exception`` does not swallow it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name} during start-up")
        self.signal = signal_name


def build_obeying_signals(build: Callable[[], T]) -> T:
    """Run a blocking start-up step (engine load: seconds to minutes) so that SIGINT/SIGTERM interrupt it.

    The signal raises `StartupInterrupted` in the step; the step cleans up what it started (VllmEngine kills
    the engine processes it spawned) and the command exits instead of serving. Without this, SIGTERM during
    an engine load would kill the process outright and leave the engine's child processes behind.
    """

    def on_signal(signum: int, frame: object) -> None:
        raise StartupInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return build()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, int | None]]) -> int:
    """Run a coroutine with SIGINT/SIGTERM → graceful stop; a second signal aborts."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set():
                log.warning("second signal: aborting")
                assert task is not None
                task.cancel()
                return
            log.info("signal received: finishing the batch in flight, then stopping", extra={"signal": sig.name})
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return (await main(stop)) or 0
        except asyncio.CancelledError:
            return 130

    return asyncio.run(runner())
