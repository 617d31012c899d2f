"""`jobscore build-tiny-model` (engine/tinymodel.py): processes that start together on one empty cache dir."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_builds_started_together_on_one_cache_dir_all_succeed_with_one_model(tmp_path: Path) -> None:
    # Several workers (or test processes) on one host start on an empty cache dir: each builds, one rename
    # wins. With one shared ".tmp" directory the first rename pulled it from under the others
    # (a safetensors write into a directory that no longer exists).
    cmd = [sys.executable, "-m", "app.cli", "build-tiny-model", "--cache-dir", str(tmp_path)]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    paths = {Path(out.strip().splitlines()[-1]) for out, _ in outs}
    assert len(paths) == 1, paths
    model = paths.pop()
    assert model.is_relative_to(tmp_path)
    assert [c.name for c in model.parent.iterdir()] == [model.name], "a build left its temporary directory behind"

    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    assert len(tok.encode("yes", add_special_tokens=False)) == 1
    assert AutoConfig.from_pretrained(model).model_type == "qwen3"
    assert json.loads((model / "config.json").read_text())["vocab_size"] == len(tok)
    assert (model / "model.safetensors").stat().st_size > 0
