"""``jobscore``: one console script, one subcommand per process or task.

Every setting is a flag and an environment variable (``--kafka-bootstrap`` / ``JOBSCORE_KAFKA_BOOTSTRAP``);
flags win. SIGINT/SIGTERM stop a service cleanly (the batch in flight is published and committed); a
second Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from app import (
    backfill_cmds,
    bench_cmds,
    capacity_cmds,
    compress_cmds,
    contract_cmds,
    dlq_cmds,
    lanes_cmds,
    ledger_cmds,
    status_cmds,
    summarizer_cmds,
    topics_cmds,
)
from app.commands import (
    StartupInterrupted,
    add_settings_flags,
    build_obeying_signals,
    command_settings,
    run_service_command,
    run_until_signal,
    serve_health,
)
from jobscore.settings import CommonSettings, SummarizerSettings, ToolSettings, WorkerSettings

log = logging.getLogger("jobscore")

# --- subcommands ----------------------------------------------------------------------------------


async def topics_ready(s: CommonSettings, names: list[str], create: bool) -> bool:
    """Clients never create topics unless asked (``--create-topics``): a missing topic is an error that says
    what to run, not a topic made with whatever this client's settings say."""
    if create:
        from jobscore.topics import ensure_topics

        await ensure_topics(s, names)
        return True
    from jobscore.kafka import topic_reader

    async with topic_reader(s, "check") as reader:
        for name in names:
            try:
                await reader.partitions(name)
            except LookupError:
                log.error(
                    f"topic {name} does not exist: create the deployment's topics with `jobscore topics` "
                    "(or pass --create-topics)"
                )
                return False
    return True


def cmd_summarizer(ns: argparse.Namespace) -> int:
    from summarizer.service import run_summarizer

    s = command_settings(ns, SummarizerSettings)
    if not serve_health(s.metrics_port):
        return 2
    return run_service_command("summarizer", lambda stop: run_summarizer(s, stop))


def cmd_worker(ns: argparse.Namespace) -> int:
    from engine.factory import DEFAULT_SCORER, engine_from_settings
    from worker.loop import run_worker

    s = command_settings(ns, WorkerSettings)
    if not serve_health(s.metrics_port):
        return 2
    log.info("start-up: loading the engine", extra={"engine": s.engine, "model": str(s.model or DEFAULT_SCORER)})
    try:
        engine = build_obeying_signals(lambda: engine_from_settings(s))
    except StartupInterrupted as e:
        log.info("signal during start-up: exiting before serving", extra={"signal": e.signal})
        return 130

    async def main(stop: asyncio.Event) -> int:
        await run_worker(s, engine, stop)
        return 0

    try:
        return run_service_command("worker", main)
    finally:
        engine.close()


def cmd_dev(ns: argparse.Namespace) -> int:
    from ops.devstack import EmbeddedBroker, EmbeddedRedis

    s = command_settings(ns, CommonSettings)
    port = int(ns.port)
    broker = EmbeddedBroker(port=port).start()
    rds = EmbeddedRedis(s.redis_url).start()
    print(f"export JOBSCORE_KAFKA_BOOTSTRAP={broker.bootstrap}")
    print(f"export JOBSCORE_REDIS_URL={rds.url}")
    print("# embedded stack running; Ctrl-C stops it", flush=True)

    async def main(stop: asyncio.Event) -> int:
        await stop.wait()
        return 0

    try:
        return run_until_signal(main)
    finally:
        rds.stop()
        broker.stop()


def cmd_post(ns: argparse.Namespace) -> int:
    import msgspec

    from client import publish_postings
    from engine.corpus import postings
    from schemas import posting_from_row

    s = command_settings(ns, CommonSettings)
    if ns.generate:
        items = postings(ns.generate, seed=ns.seed)
    elif ns.file:
        with open(ns.file, "rb") as fh:
            items = []
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        items.append(posting_from_row(json.loads(line)))
                    except (ValueError, msgspec.ValidationError) as e:
                        print(f"{ns.file}:{i}: {e}", file=sys.stderr)
                        return 2
    else:
        print("give a JSONL file or --generate N", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> int:
        if not await topics_ready(s, [s.topic_postings], ns.create_topics):
            return 2
        n = await publish_postings(s, items)
        print(f"posted {n} postings to {s.topic_postings}")
        return 0

    return run_until_signal(main)


def cmd_request(ns: argparse.Namespace) -> int:
    from client import RankingWaiter, new_request, publish_requests
    from schemas import RANKINGS

    s = command_settings(ns, CommonSettings)
    candidates = [c for part in ns.candidates for c in part.split(",") if c]
    req = new_request(ns.query, candidates, top_k=ns.top_k, deadline_s=ns.deadline)

    async def main(stop: asyncio.Event) -> int:
        if not await topics_ready(s, [s.topic_requests, s.topic_rankings], ns.create_topics):
            return 2
        async with RankingWaiter(s) as waiter:
            await publish_requests(s, [req])
            print(
                f"published request {req.request_id} ({len(candidates)} candidates); waiting for its ranking",
                file=sys.stderr,
            )
            ranking = await waiter.wait(req.request_id, ns.timeout)
        sys.stdout.write(RANKINGS.encode(ranking).decode() + "\n")
        return 0 if ranking.status == "ok" else 1

    return run_until_signal(main)


def cmd_tail(ns: argparse.Namespace) -> int:
    from client import tail
    from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, SUMMARIES, SchemaError

    s = command_settings(ns, CommonSettings)
    # "results": the rankings topic's old name, still accepted.
    spec = {
        "rankings": RANKINGS,
        "results": RANKINGS,
        "dead-letters": DEAD_LETTERS,
        "requests": SCORE_REQUESTS,
        "postings": POSTINGS,
        "summaries": SUMMARIES,
    }[ns.topic]

    async def main(stop: asyncio.Event) -> int:
        async def pump() -> None:
            async for rec, msg in tail(
                s, spec, from_beginning=ns.from_beginning, limit=ns.limit, idle_exit_s=ns.idle_exit
            ):
                if ns.format == "json":
                    # The whole record, for tools that need more than the value (jq, a replay script).
                    row: dict[str, Any] = {
                        "topic": rec.topic,
                        "partition": rec.partition,
                        "offset": rec.offset,
                        "timestamp": rec.timestamp,
                        "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None,
                        "headers": {k: v.decode("utf-8", "replace") for k, v in rec.headers or ()},
                    }
                    if isinstance(msg, SchemaError):
                        row["error"] = msg.reason
                        row["value_utf8"] = (rec.value or b"").decode("utf-8", "replace")
                    else:
                        row["value"] = json.loads(spec.encode(msg))
                    print(json.dumps(row))
                elif isinstance(msg, SchemaError):
                    print(json.dumps({"partition": rec.partition, "offset": rec.offset, "error": msg.reason}))
                else:
                    sys.stdout.write(spec.encode(msg).decode() + "\n")
                sys.stdout.flush()

        task = asyncio.create_task(pump())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for t in (task, stopper):
            t.cancel()
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]
        return 0

    return run_until_signal(main)


def cmd_build_tiny_model(ns: argparse.Namespace) -> int:
    from engine.tinymodel import build_tiny_model

    s = command_settings(ns, ToolSettings)
    print(build_tiny_model(s.cache_dir, force=ns.force))
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from app.demo import demo

    s = command_settings(ns, WorkerSettings)
    explicit_broker = "s_kafka_bootstrap" in {k for k, v in vars(ns).items() if v is not None} or bool(
        os.environ.get("JOBSCORE_KAFKA_BOOTSTRAP")
    )
    return demo(
        s,
        postings=ns.postings,
        requests=ns.requests,
        candidates=ns.candidates,
        use_given_broker=explicit_broker,
        long_postings=ns.corpus == "postings",
    )


def cmd_build_scorer(ns: argparse.Namespace) -> int:
    from engine.pruned_scorer import build_pruned_scorer
    from engine.scorer import ScorerBuildError, build_scorer

    s = command_settings(ns, ToolSettings)
    try:
        full = build_scorer(s.cache_dir, force=ns.force)
        print(build_pruned_scorer(s.cache_dir, force=ns.force) if ns.pruned else full)
    except ScorerBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


# The commands that run or set up a deployment list every setting in --help; the others (clients, operator
# tools, benches) list what they use and show the deployment settings with --help-all.
DEPLOYMENT_COMMANDS = frozenset({"worker", "summarizer", "topics", "demo", "dev"})


class _HelpAll(argparse.Action):
    """``--help-all``: the command's help with every setting, the deployment ones included."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        build_parser(show_all=True).parse_args([parser.prog.split()[-1], "--help"])


def build_parser(show_all: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobscore",
        description="Streaming batch scoring for semantic job search with small language models. "
        "Postings are summarized once into Redis; workers score query–job pairs with an SLM in vLLM "
        "(P(yes)) and publish rankings to Kafka.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every setting is also an environment variable JOBSCORE_<NAME>. Run `jobscore demo` to see the "
        "whole path on an embedded broker, Redis and a tiny model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str, model: type[BaseModel]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        shown = show_all or name in DEPLOYMENT_COMMANDS
        if not shown:
            p.add_argument(
                "--help-all", action=_HelpAll, nargs=0, help="show this help with the deployment settings too and exit"
            )
        add_settings_flags(p, model, show_deployment=shown)
        return p

    p = add(
        "demo",
        cmd_demo,
        "Run the whole pipeline end to end on the embedded stack: real ESCO job postings, queries with known "
        "answers, rankings printed with their quality (ndcg@10, hit@3), served by the shipped scorer (--model "
        "names another; 'tiny' is the random test model, its scores mean nothing). --corpus postings posts them as "
        "realistic-length postings (~900 tokens) so the summaries' compression shows. Starts what is missing, "
        "cleans up after.",
        WorkerSettings,
    )
    p.add_argument(
        "--corpus",
        choices=["esco-short", "postings"],
        default="esco-short",
        help="esco-short: ESCO's own descriptions (~80 words); postings: realistic-length postings around them.",
    )
    p.add_argument("--postings", type=int, default=120, help="ESCO postings to publish (answers + distractors).")
    p.add_argument("--requests", type=int, default=10, help="Scoring requests to send (one per demo query, <= 10).")
    p.add_argument("--candidates", type=int, default=40, help="Candidates per request (its answers included).")
    add(
        "summarizer",
        cmd_summarizer,
        "Run the summarizer service (postings topic → summaries in Redis).",
        SummarizerSettings,
    )
    add("worker", cmd_worker, "Run a scoring worker (requests topic → rankings on the rankings topic).", WorkerSettings)
    p = add(
        "dev",
        cmd_dev,
        "Start the embedded broker (tansu) and Redis if none answers; print the env to use them; run until Ctrl-C.",
        CommonSettings,
    )
    p.add_argument("--port", default=9092, help="Broker port.")
    p = add(
        "post",
        cmd_post,
        "Publish job postings from a JSONL file (one JobPosted per line) or generated ones.",
        CommonSettings,
    )
    p.add_argument("file", nargs="?", help="JSONL file of postings.")
    p.add_argument("--generate", type=int, default=0, help="Publish N generated postings instead.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--create-topics",
        action="store_true",
        help="Create missing topics from the topic plan first (by default a missing topic is an error: topics are "
        "the deployment's, made by `jobscore topics`).",
    )
    p = add(
        "request", cmd_request, "Publish one scoring request and print its ranking when it arrives.", CommonSettings
    )
    p.add_argument("query", help="Search query text.")
    p.add_argument("candidates", nargs="+", help="Candidate job ids (space or comma separated).")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--deadline", type=float, default=None, help="Seconds from now after which to give up.")
    p.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for the ranking.")
    p.add_argument(
        "--create-topics",
        action="store_true",
        help="Create missing topics from the topic plan first (by default a missing topic is an error: topics are "
        "the deployment's, made by `jobscore topics`).",
    )
    p = add("tail", cmd_tail, "Print messages of a topic as JSON lines (the rankings by default).", CommonSettings)
    p.add_argument(
        "--topic",
        choices=["rankings", "results", "dead-letters", "requests", "postings", "summaries"],
        default="rankings",
        help="Which topic ('results': the rankings topic's old name).",
    )
    p.add_argument(
        "--format",
        choices=["value", "json"],
        default="value",
        help="value: each message as it is (JSON); json: the whole record as one JSON object per line — topic, "
        "partition, offset, timestamp (ms), key, headers and the value (or the decode error and the raw value).",
    )
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="Stop after N messages.")
    p.add_argument("--idle-exit", type=float, default=None, help="Stop after this many idle seconds.")
    p = add(
        "build-scorer",
        cmd_build_scorer,
        "Build (or find) the shipped scorer: merge the LoRA adapter in engine/scorer into the packaged "
        "SmolLM2-135M-Instruct after checking the base's hash; with --pruned, then cut it to the OSSCAR-pruned "
        "scorer from engine/scorer_pruned (kept neurons + re-fitted projections) and check its scores; print the "
        "directory (serve it with --model).",
        ToolSettings,
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the built directory exists")
    p.add_argument("--pruned", action="store_true", help="build the pruned scorer (scorer-pruned)")
    p = add(
        "build-tiny-model",
        cmd_build_tiny_model,
        "Build (or find) the tiny random-weight Qwen3 model that plumbing tests use (its scores mean nothing); "
        "print its directory.",
        ToolSettings,
    )
    p.add_argument("--force", action="store_true")
    # The summarizer's, compress/'s and bench/'s commands, in help order; `add` is the helper above
    # (name, fn, help, settings model) so their flags follow the same settings ⇄ flags convention.
    for module in (
        topics_cmds,
        contract_cmds,
        backfill_cmds,
        dlq_cmds,
        status_cmds,
        capacity_cmds,
        ledger_cmds,
        summarizer_cmds,
        compress_cmds,
        bench_cmds,
        lanes_cmds,
    ):
        module.register(sub, add)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.fn(ns))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
