"""Shared fixtures: a small world and tiny task models trained by the `oscar` CLI (OSCAR_BIN)."""

import os

# One compute thread per call, so two Python threads show whether the GIL is released.
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
OSCAR = os.environ.get("OSCAR_BIN", str(REPO / "target" / "debug" / "oscar"))


def oscar(*args: str) -> str:
    r = subprocess.run([OSCAR, *args], capture_output=True, text=True)
    assert r.returncode == 0, f"oscar {' '.join(args)}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("oscar")
    w = d / "world"
    oscar("world", "generate", "--out", str(w), "--images", "60", "--feature-dim", "8", "--render", "0")
    models = {}
    for task, extra in [("caption", ["--eval-images", "2"]), ("vqa", []), ("retrieval", ["--test-images", "4"])]:
        out = d / task
        oscar("train", task, "--data", str(w), "--out", str(out), "--steps", "2", "--batch-size", "4", *extra)
        models[task] = out
    return {
        "dir": d,
        "world": w,
        "features": w / "features" / "features.tsv",
        "labels": w / "labels" / "predictions.tsv",
        "models": models,
        "ids": [s["id"] for s in json.loads((w / "scenes.json").read_text()) if s["split"] == "test"][:4],
    }
