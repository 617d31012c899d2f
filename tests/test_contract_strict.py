"""The committed JSON Schemas (schemas/contract/) pass a strict validator that is not ours: ajv 8 in strict mode
(draft 2020-12), the validator JavaScript clients use. Strict mode refuses ambiguous schemas — a tuple
(``prefixItems``) that does not say it is closed, unknown keywords, type-less numeric limits — so a client in
another language gets the same answer from the contract as the Python decoders give.

ajv comes from the npm registry (cached per user); node is part of the machine (see ../shared/NOTES.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "schemas" / "contract"
AJV_DIR = Path(os.environ.get("JOBSCORE_TEST_CACHE", Path.home() / ".cache" / "jobscore-tests")) / "ajv8"

# Compile every schema strictly, then validate each case: [schema file, value, expected valid].
CHECK = r"""
const Ajv2020 = require("ajv/dist/2020");
const fs = require("fs");
const [dir, casesFile] = process.argv.slice(2);
const out = { compiled: {}, cases: [] };
const validators = {};
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  try {
    validators[f] = ajv.compile(JSON.parse(fs.readFileSync(dir + "/" + f, "utf8")));
    out.compiled[f] = "ok";
  } catch (e) {
    out.compiled[f] = e.message;
  }
}
for (const [file, value] of JSON.parse(fs.readFileSync(casesFile, "utf8"))) {
  const v = validators[file];
  out.cases.push(v ? v(value) : null);
}
console.log(JSON.stringify(out));
"""

REQUEST = {"schema": "score_request.v1", "request_id": "r-1", "query": "nurse", "candidates": ["j-1"]}
RANKING = {"schema": "ranking.v1", "request_id": "r-1", "results": [["j-1", 0.9]]}
DEAD_LETTER = {
    "schema": "dead_letter.v1",
    "stage": "worker",
    "reason": "why",
    "error_type": "invalid",
    "topic": "jobscore.requests",
    "partition": 0,
    "offset": 7,
}
SUMMARIZED = {"schema": "job_summarized.v1", "job_id": "j-1", "content_hash": "ab12", "summarizer_version": "v1"}
CASES: list[tuple[str, dict[str, object], bool]] = [
    ("score_request.v1.json", REQUEST, True),
    ("score_request.v1.json", {**REQUEST, "reply_topic": "svc.rankings"}, True),
    ("score_request.v1.json", {**REQUEST, "reply_topic": "bad topic name!"}, False),
    ("score_request.v1.json", {**REQUEST, "reply_topic": ".."}, False),
    ("ranking.v1.json", RANKING, True),
    ("ranking.v1.json", {**RANKING, "results": [["j-1", 0.9, "extra"]]}, False),
    ("ranking.v1.json", {**RANKING, "results": [["j-1"]]}, False),
    ("ranking.v1.json", {**RANKING, "status": "maybe"}, False),
    ("dead_letter.v1.json", DEAD_LETTER, True),
    ("dead_letter.v1.json", {**DEAD_LETTER, "error_type": "summarize_failed"}, True),
    ("dead_letter.v1.json", {**DEAD_LETTER, "error_type": "something_else"}, False),
    ("dead_letter.v1.json", {**DEAD_LETTER, "stage": "elsewhere"}, False),
    ("job_summarized.v1.json", SUMMARIZED, True),
    ("job_summarized.v1.json", {**SUMMARIZED, "job_id": "has space"}, False),
    ("job_summarized.v1.json", {**SUMMARIZED, "schema": "job_summarized.v9"}, False),
]


@pytest.fixture(scope="module")
def ajv() -> Path:
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are needed for the strict-validator check"
    if not (AJV_DIR / "node_modules" / "ajv" / "dist" / "2020.js").exists():
        AJV_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(AJV_DIR), "ajv@8"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return AJV_DIR


def test_every_schema_compiles_in_ajv_strict_mode_and_judges_values_like_the_decoders(
    ajv: Path, tmp_path: Path
) -> None:
    from schemas import DEAD_LETTERS, RANKINGS, SCORE_REQUESTS, SUMMARIES, SchemaError

    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([[f, v] for f, v, _ in CASES]))
    script = tmp_path / "check.js"
    script.write_text(CHECK)
    done = subprocess.run(
        ["node", str(script), str(CONTRACT), str(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(ajv / "node_modules")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out["compiled"]) == {p.name for p in CONTRACT.glob("*.json")} and len(out["compiled"]) == 5
    assert all(v == "ok" for v in out["compiled"].values()), out["compiled"]
    spec = {
        "score_request.v1.json": SCORE_REQUESTS,
        "ranking.v1.json": RANKINGS,
        "dead_letter.v1.json": DEAD_LETTERS,
        "job_summarized.v1.json": SUMMARIES,
    }
    for (file, value, valid), ajv_valid in zip(CASES, out["cases"], strict=True):
        assert ajv_valid is valid, f"ajv judged {file} {value} valid={ajv_valid}, expected {valid}"
        try:  # the Python decoders agree with the contract
            spec[file].decode(json.dumps(value).encode())
            decoded = True
        except SchemaError:
            decoded = False
        assert decoded is valid, f"decoder judged {file} {value} valid={decoded}, expected {valid}"


def test_the_asyncapi_document_states_the_wire_rules_a_client_needs() -> None:
    """Partitioner, keys and ordering, how to read the shared rankings topic, duplicates after restarts, reply
    topics — in the contract itself, not only in prose elsewhere; and no promise the dead-letter rules break."""
    import yaml

    doc = yaml.safe_load((CONTRACT / "asyncapi.yaml").read_text())
    info = doc["info"]["description"]
    assert "murmur2" in info and "Order holds per key only" in info and "resurface" in info
    rankings = doc["channels"]["rankings"]["description"]
    assert "no consumer group" in rankings and "starts at the end" in rankings and "must exist" in rankings
    requests = doc["channels"]["requests"]["description"]
    assert "exactly one ranking" not in requests and "only a dead letter" in requests
