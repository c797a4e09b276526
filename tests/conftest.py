"""Shared fixtures: small data written by the tests themselves."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BUCKET = "winnow-test"
REPO = Path(__file__).resolve().parents[1]


def massive_line(i: int, intent: str, annot: str, scenario: str = "s", partition: str = "train",
                 locale: str = "en-US") -> str:
    from winnow.selectors.annotation import parse_annotation

    text, _ = parse_annotation(annot)
    return json.dumps({"id": str(i), "locale": locale, "partition": partition,
                       "scenario": scenario, "intent": intent, "utt": text, "annot_utt": annot},
                      ensure_ascii=False)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from winnow.pipelines.demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo"))


def intent_cmd(data: Path | str, out: Path) -> list[str]:
    """The demo intent config on the generated data (a folder, or a gs:// or s3:// prefix)."""
    cfg = REPO / "configs" / "demo-intent.yaml"
    at = lambda name: f"{str(data).rstrip('/')}/{name}"  # noqa: E731
    sets = [f"output_dir={out}"]
    for key, name in (("annotated", "intents.jsonl"), ("pool", "pool.txt")):
        sets.append(f"{key}=[{{path: '{at(name)}', format: "
                    f"{'massive' if key == 'annotated' else 'text'}}}]")
    sets.append(f"eval.test_path={at('test.jsonl')}")
    args = [sys.executable, "-m", "winnow.pipelines.cli", "run", str(cfg), "--quiet"]
    for s in sets:
        args += ["--set", s]
    return args + ["--direct_num_workers=1"]


@pytest.fixture(scope="session")
def reference_run(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(intent_cmd(demo_data, out), check=True, cwd=REPO, capture_output=True)
    return out




def kill_when_stage_starts(cmd: list[str], work: Path, stage: str,
                           env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` and SIGKILL it (and its children) as soon as ``stage``'s working folder
    (``work/<stage>.tmp``) appears: a hard kill in the middle of that stage."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    marker, deadline = work / f"{stage}.tmp", time.time() + 300
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), f"the run never reached {stage}"


def lm_cmd(data: Path | str, out: Path | str, *extra: str) -> list[str]:
    """The demo LM config on the generated data (a folder, or a gs:// or s3:// prefix), with
    a small NMT budget for tests."""
    cfg = REPO / "configs" / "demo-lm.yaml"
    at = lambda name: f"{str(data).rstrip('/')}/{name}"  # noqa: E731
    sets = [f"output_dir={out}",
            f"target_seed={{path: '{at('de_seed.jsonl')}', format: massive}}",
            f"source_in_domain={{path: '{at('en_source.jsonl')}', format: massive}}",
            f"bitext={{path: '{at('bitext.tsv')}', format: bitext}}",
            f"eval.test_path={at('de_test.jsonl')}",
            "nmt.max_updates=60", "nmt.finetune_updates=20", "seed_parallel.updates=20",
            "self_training.subset=40", *extra]
    args = [sys.executable, "-m", "winnow.pipelines.cli", "run", str(cfg), "--quiet"]
    for s in sets:
        args += ["--set", s]
    return args + ["--direct_num_workers=1"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server (bucket ``BUCKET``); yields the Beam options that point at it."""
    from winnow.pipelines.emulators import s3_emulator
    with s3_emulator(BUCKET, tmp_path_factory.mktemp("moto")) as beam_args:
        yield beam_args


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """gcp-storage-emulator in memory (bucket ``BUCKET``); yields the environment that
    points clients at it."""
    from winnow.pipelines.emulators import gcs_emulator
    with gcs_emulator(BUCKET, tmp_path_factory.mktemp("gcs")) as env:
        yield env


def upload(local: Path, prefix: str, beam_args: list[str]) -> None:
    """Copy a folder's files under a bucket prefix."""
    from winnow.pipelines import fileio
    fileio.configure(beam_args)
    for f in sorted(local.iterdir()):
        if f.is_file():
            fileio.write_bytes(f"{prefix}/{f.name}", f.read_bytes())
