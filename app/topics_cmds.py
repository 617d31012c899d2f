"""``jobscore topics``: the deployment's topics as a plan (jobscore/topics.py), loaded by `app.cli`.

- ``jobscore topics --dry-run``: print the plan (and, with a broker, what applying it would do).
- ``jobscore topics``: create the missing topics with their configs; report existing ones that drift.
- ``jobscore topics --strimzi``: print the plan as Strimzi ``KafkaTopic`` YAML (no broker contacted).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.commands import AddCommand, command_settings, run_until_signal
from jobscore.settings import CommonSettings


def cmd_topics(ns: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaConnectionError

    from jobscore.kafka import unreachable_message
    from jobscore.topics import TopicPlanError, apply_plan, plan_topics, render_strimzi, render_text

    s = command_settings(ns, CommonSettings)
    try:
        plan = plan_topics(s, ns.reply_topic)
    except TopicPlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ns.strimzi:
        sys.stdout.write(render_strimzi(plan, ns.strimzi_cluster, ns.namespace))
        return 0
    if ns.dry_run:
        print(render_text(plan))
        if ns.offline:
            return 0

    async def main(stop: asyncio.Event) -> int:
        try:
            outcomes = await apply_plan(s, plan, allow_single_replica=ns.allow_single_replica, dry_run=ns.dry_run)
        except TopicPlanError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KafkaConnectionError:
            print(f"error: {unreachable_message(s)}", file=sys.stderr)
            return 1
        verb = "would create" if ns.dry_run else "created"
        for o in outcomes:
            what = {"create": verb, "exists": "exists as planned", "drift": "exists, differs from the plan"}[o.action]
            print(f"{o.name}: {what}" + (f": {o.detail}" if o.detail else ""))
        if any(o.action == "drift" for o in outcomes):
            print(
                "existing topics are never altered; change them with kafka-configs.sh / kafka-topics.sh "
                "(or Strimzi) if the plan is what you want",
                file=sys.stderr,
            )
        return 0

    return run_until_signal(main)


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:  # type: ignore[type-arg]
    p = add(
        "topics",
        cmd_topics,
        "Create the deployment's topics from the topic plan (partitions, replication factor, "
        "min.insync.replicas, retention/compaction, max.message.bytes from settings and the schemas' size "
        "limits). Existing topics are reported, never altered.",
        CommonSettings,
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the plan and what applying it would do; create nothing. With --offline, print the plan only.",
    )
    p.add_argument("--offline", action="store_true", help="With --dry-run: do not contact the broker.")
    p.add_argument(
        "--reply-topic",
        action="append",
        default=[],
        metavar="NAME",
        help="Also plan a client's reply topic (a request's reply_topic must exist before requests name it), with "
        "the rankings topic's partitions, replication, retention and size limit. Repeatable.",
    )
    p.add_argument(
        "--allow-single-replica",
        action="store_true",
        help="Create replication-factor-1 topics even on a multi-broker cluster (acks=all then waits for one "
        "copy: a broker loss loses committed work).",
    )
    p.add_argument(
        "--strimzi", action="store_true", help="Print the plan as Strimzi KafkaTopic YAML instead of applying it."
    )
    p.add_argument(
        "--strimzi-cluster", default="jobscore", help="The Strimzi Kafka cluster name (strimzi.io/cluster label)."
    )
    p.add_argument("--namespace", default=None, help="metadata.namespace of the rendered KafkaTopics.")
