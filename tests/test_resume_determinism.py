"""Runs resume after a hard kill, and the same config + seed gives byte-identical outputs."""
import subprocess

from conftest import REPO, intent_cmd, kill_when_stage_starts

CORPUS = ("corpus/corpus.jsonl", "corpus/corpus.parquet", "pool/selected.jsonl",
          "diversity/diversity_order.jsonl")


def test_same_seed_same_bytes(demo_data, reference_run, tmp_path):
    out = tmp_path / "again"
    subprocess.run(intent_cmd(demo_data, out), check=True, cwd=REPO, capture_output=True)
    for rel in CORPUS:
        assert (out / rel).read_bytes() == (reference_run / rel).read_bytes(), rel


def test_rerun_skips_completed_stages(demo_data, reference_run):
    before = {p: p.stat().st_mtime_ns for p in reference_run.glob("*/_DONE.json")}
    r = subprocess.run(intent_cmd(demo_data, reference_run)[:-1] + ["--direct_num_workers=1"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = {p: p.stat().st_mtime_ns for p in reference_run.glob("*/_DONE.json")}
    assert before == after and len(before) >= 8


def test_sigkill_mid_stage_then_resume_is_identical(demo_data, reference_run, tmp_path):
    out = tmp_path / "killed"
    kill_when_stage_starts(intent_cmd(demo_data, out), out, "self_training")
    assert not (out / "self_training" / "_DONE.json").exists()
    assert (out / "pool" / "_DONE.json").exists()
    subprocess.run(intent_cmd(demo_data, out), check=True, cwd=REPO, capture_output=True)
    for rel in CORPUS:
        assert (out / rel).read_bytes() == (reference_run / rel).read_bytes(), rel


def test_corpus_tagger_fitted_alone_equals_the_one_fitted_beside_the_upper_bound(
        demo_data, reference_run, tmp_path):
    """The upper_bound stage fits the corpus's slot tagger on a free core; a corpus stage
    redone alone fits its own, and writes the same bytes."""
    import shutil

    out = tmp_path / "corpus_alone"
    shutil.copytree(reference_run, out)
    before = (out / "upper_bound" / "_DONE.json").stat().st_mtime_ns
    r = subprocess.run(intent_cmd(demo_data, out)[:-1] + ["--force", "corpus",
                                                          "--direct_num_workers=1"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "upper_bound" / "_DONE.json").stat().st_mtime_ns == before  # not redone
    for rel in ("corpus/corpus.jsonl", "corpus/corpus.parquet"):
        assert (out / rel).read_bytes() == (reference_run / rel).read_bytes(), rel


def test_the_paraphrase_fine_tune_runs_beside_the_intent_model_fits(reference_run):
    """The encoder fine-tune starts with self-training; the stages that embed with the intent
    model's encoder (one cache) still run one after another, in a fresh run's order."""
    import json

    summary = json.loads((reference_run / "summary.json").read_text())
    start = {n: r["started"] for n, r in summary.items()}
    end = {n: r["started"] + r["seconds"] for n, r in summary.items()}
    assert start["paraphrase"] < end["self_training"] and start["self_training"] < end["paraphrase"]
    chain = ("self_training", "upper_bound", "reference_curves", "diversity", "curves", "corpus")
    resolution = 0.01  # the records round their times to hundredths of a second
    assert all(end[a] <= start[b] + resolution for a, b in zip(chain, chain[1:]))
