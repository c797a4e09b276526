"""The whole LM-bootstrapping chain on the demo data: real e5 filter, fairseq, KenLM; the
outputs exist, every filter accounts for its records, and a second run is byte-identical."""
import json
import subprocess

import pytest

from conftest import REPO, lm_cmd

LM_OUTPUTS = ("final_lm/lm.txt", "final_lm/lm.arpa", "bitext/filtered.jsonl",
              "final_lm/translations.jsonl")


@pytest.fixture(scope="module")
def lm_run(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    r = subprocess.run(lm_cmd(demo_data, out), cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_lm_chain_outputs_and_accounting(lm_run):
    metrics = json.loads((lm_run / "metrics.json").read_text())
    for row in ("seed_only", "all"):
        assert metrics[f"{row}.perplexity"] > 1 and 0 <= metrics[f"{row}.oov_rate"] <= 1
    assert metrics["all.sentences"] >= metrics["seed_only.sentences"]
    summary = json.loads((lm_run / "summary.json").read_text())
    bt = summary["bitext"]["stats"]
    assert bt["read"] == bt["kept"] + bt["dropped"] + bt["rejected"] and bt["kept"] == 300
    tr = summary["rows"]["stats"]["all.translations"]
    assert tr["read"] == tr["kept"] + tr["dropped"] == 200
    assert (lm_run / "final_lm" / "lm.binary").stat().st_size > 0
    rows = [json.loads(x) for x in (lm_run / "final_lm" / "translations.jsonl").open()]
    assert {"nmt_score", "lm_per_token", "kept", "reason"} <= set(rows[0])
    assert (lm_run / "report.html").exists()


@pytest.mark.slow
def test_lm_chain_is_deterministic(lm_run, demo_data, tmp_path):
    out = tmp_path / "again"
    subprocess.run(lm_cmd(demo_data, out), cwd=REPO, check=True, capture_output=True)
    for rel in LM_OUTPUTS:
        assert (out / rel).read_bytes() == (lm_run / rel).read_bytes(), rel
