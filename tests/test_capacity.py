"""The capacity model (ops/capacity.py) and `jobscore capacity`: pure arithmetic, checked against
hand-computed values and against its own promises (minimal workers, partitions that carry the growth)."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from app.cli import main as cli_main
from ops.capacity import (
    NICE_PARTITIONS,
    Knobs,
    Load,
    batch_items,
    busiest_rate,
    keda_threshold,
    latency,
    partitions_for,
    plan,
    workers_for,
)

# The paper's order of magnitude (~2,000 items/s per GPU at ~200 tokens per pair).
PAPER = Load(rate=50, candidates=200, tokens=200, items_per_s=2000)


class TestPieces:
    def test_batch_items_token_budget_or_item_cap(self) -> None:
        assert batch_items(200, Knobs(max_batch_tokens=16_384, max_batch_items=512)) == 81  # tokens bind
        assert batch_items(20, Knobs(max_batch_tokens=16_384, max_batch_items=512)) == 512  # items bind
        assert batch_items(50_000, Knobs()) == 1

    def test_workers_for_counts_the_busiest_worker_partitions(self) -> None:
        # 50,000 pairs/s at 1,400 per worker needs 36 on a perfect spread; on 48 partitions 36 workers
        # leave 12 of them with 2 partitions (2,083 pairs/s > 1,400): only 48 workers fit.
        assert math.ceil(50_000 / 1_400) == 36
        assert workers_for(50_000, 2000, 0.7, 48) == 48
        # on 72 partitions, 36 workers own 2 each (1,389 pairs/s): fits
        assert workers_for(50_000, 2000, 0.7, 72) == 36
        # one partition heavier than a worker: cannot be carried
        assert workers_for(50_000, 2000, 0.7, 24) == 25

    def test_partitions_for_is_nice_and_covers_workers(self) -> None:
        assert partitions_for(50_000, 2000, 0.7) == 48
        assert partitions_for(100, 2000, 0.7) == 1
        assert all(partitions_for(d, 2000, 0.7) in NICE_PARTITIONS for d in (1e3, 1e4, 1e5, 1e6))

    def test_latency_md1_mean_wait_and_saturation(self) -> None:
        load = Load(rate=1, candidates=2000, tokens=200, items_per_s=2000)  # service 1 s
        lat = latency(load, 0.5, Knobs(max_wait_ms=0))  # rho 0.5: M/D/1 wait = rho S / (2 (1 - rho)) = 0.5 s
        assert lat.service_s == pytest.approx(1.0) and lat.wait_mean_s == pytest.approx(0.5)
        assert lat.p99_s > lat.p50_s > lat.service_s
        assert math.isinf(latency(load, 1.0, Knobs()).p99_s)  # rho 1: unbounded
        p99s = [latency(PAPER, PAPER.rate / w, Knobs()).p99_s for w in (6, 8, 12, 24)]
        assert p99s == sorted(p99s, reverse=True)

    def test_keda_threshold_is_what_drains_in_the_budget_slack(self) -> None:
        k = Knobs(latency_budget_s=0.5, max_wait_ms=5)
        # fixed part: 5 ms wait + 81-pair batch (40.5 ms) + 200 pairs (100 ms) = 145.5 ms; slack 354.5 ms
        assert keda_threshold(PAPER, k) == math.floor(2000 * (0.5 - 0.005 - 81 / 2000 - 0.1))
        # no slack left: one engine batch, never less
        assert keda_threshold(Load(1, 5000, 200, 2000), k) == 81

    def test_load_rejects_nonsense(self) -> None:
        with pytest.raises(ValueError):
            Load(rate=0, candidates=10, tokens=100, items_per_s=100)
        with pytest.raises(ValueError, match="utilisation"):
            Knobs(utilisation=1.0)


class TestPlan:
    def test_paper_example_meets_budget_with_fewest_workers(self) -> None:
        k = Knobs()
        p = plan(PAPER, k)
        assert p.pairs_per_s == 10_000 and p.within_budget
        assert p.partitions in NICE_PARTITIONS and p.partitions >= p.keda_max_replicas >= p.keda_min_replicas
        assert p.keda_min_replicas == p.workers
        # minimal: one worker fewer breaks utilisation on the busiest worker or the p99 budget
        fewer = p.workers - 1
        rate = busiest_rate(PAPER.rate, fewer, p.partitions)
        assert (
            rate * PAPER.candidates / PAPER.items_per_s > k.utilisation
            or latency(PAPER, rate, k).p99_s > k.latency_budget_s
        )
        # latency, not throughput, sized it: 8 workers carry 10,000 pairs/s at 70% but queue too long
        assert workers_for(10_000, 2000, 0.7, p.partitions) < p.workers
        assert any("keep p99 within" in n for n in p.notes)

    def test_partitions_carry_the_growth_case(self) -> None:
        p = plan(PAPER)
        grown = plan(PAPER.scaled(10), partitions=p.partitions)
        assert grown.within_budget and grown.workers <= p.partitions
        assert p.keda_max_replicas == grown.workers

    def test_budget_infeasible_says_so(self) -> None:
        p = plan(Load(rate=5, candidates=2000, tokens=200, items_per_s=2000))  # 1 s of engine per request
        assert not p.within_budget
        assert any("no worker count meets" in n for n in p.notes)

    def test_existing_partitions_too_few_said(self) -> None:
        p = plan(PAPER, partitions=4)
        assert p.workers == 4 and any("cannot carry" in n for n in p.notes)


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


class TestCli:
    def test_capacity_prints_plan_and_growth(self) -> None:
        rc, out = _cli("capacity", "--rate", "50", "--candidates", "200", "--tokens", "200", "--items-per-s", "2000")
        assert rc == 0
        p = plan(PAPER)
        assert f"workers:      {p.workers}" in out and f"partitions:   {p.partitions}" in out
        assert f"threshold {p.keda_threshold_pairs:,} pairs" in out and "at 10x" in out

    def test_capacity_json_and_budget_exit_code(self) -> None:
        rc, out = _cli(
            "capacity", "--rate", "5", "--candidates", "2000", "--tokens", "200", "--items-per-s", "2000", "--json"
        )
        assert rc == 1  # budget not met
        doc = json.loads(out)
        assert doc["plan"]["within_budget"] is False and doc["growth"]["load"]["rate"] == 50

    def test_capacity_sizes_with_the_newest_measured_figure_and_says_which(self) -> None:
        from bench.throughput import newest
        from engine.factory import DEFAULT_SCORER

        m = newest(DEFAULT_SCORER, "cpu")
        assert m is not None, "the default scorer's CPU figure is recorded (bench/results/throughput.json)"
        rc, out = _cli("capacity", "--rate", "0.1", "--candidates", "20", "--platform", "cpu", "--latency-budget", "60")
        assert rc == 0, out
        assert f"engine speed: measured: {DEFAULT_SCORER} on cpu, {m.items_per_s:g} items/s at {m.tokens}" in out
        assert f"{m.tokens} tokens/pair, {m.items_per_s:,.0f} pairs/s per worker" in out

    def test_capacity_refuses_to_guess_a_speed_nobody_measured(self, capsys: pytest.CaptureFixture[str]) -> None:
        rc, _ = _cli("capacity", "--rate", "50", "--candidates", "200", "--model", "no-such-model")
        assert rc == 2
        err = capsys.readouterr().err
        assert "no measured items/s for no-such-model on gpu" in err and "pass --items-per-s" in err


def test_newest_measured_figure_per_model_and_platform(tmp_path: Path) -> None:
    from bench.throughput import newest

    rows = [
        {
            "model": "m",
            "platform": "cpu",
            "machine": "a",
            "items_per_s": 5.0,
            "tokens": 150,
            "date": "2026-12-01",
            "source": "s",
        },
        {
            "model": "m",
            "platform": "cpu",
            "machine": "b",
            "items_per_s": 7.0,
            "tokens": 150,
            "date": "2026-12-07",
            "source": "s",
        },
        {
            "model": "m",
            "platform": "gpu",
            "machine": "h100",
            "items_per_s": 3000.0,
            "tokens": 150,
            "date": "2026-11-01",
            "source": "s",
        },
    ]
    reg = tmp_path / "throughput.json"
    reg.write_text(json.dumps({"figures": rows}))
    assert newest("m", "cpu", reg).items_per_s == 7.0  # type: ignore[union-attr]
    assert newest("m", "gpu", reg).items_per_s == 3000.0  # type: ignore[union-attr]
    assert newest("other", "cpu", reg) is None
