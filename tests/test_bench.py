"""`winnow bench --quick` runs every row end to end (real Beam, sklearn, MiniLM fp32 and
int8, KenLM, the diversity selector) and writes bench.json; it claims nothing about speed."""
import json
import math

from conftest import REPO
from winnow.pipelines.bench import run_bench


def test_quick_bench_runs_every_row(tmp_path, capsys):
    """In the default model cache, so that the e5-small weights the LM tests unpacked there
    (and, on a developer's machine, an earlier bench's int8 exports) are reused;
    tests/test_embeddings_bitext.py tests the int8 export in a cache of its own."""
    rows = run_bench(quick=True, out=tmp_path / "bench.json",
                     lm_config=REPO / "configs" / "massive-de.yaml")
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["quick"] is True and saved["rows"] == rows
    stages = [r["stage"] for r in rows]
    for part in ("n-gram relevance + top-k (Beam, 1 worker)", "(Beam, 2 workers)", "pool scoring memory",
                 "MiniLM fp32", "MiniLM int8", "KenLM", "diversity selector",
                 "bitext filter cascade", "pool scoring on S3"):
        assert any(part in s for s in stages), part
    for r in rows:
        assert r["items"] > 0 and r["items_per_s"] > 0 and math.isfinite(r["ratio"]) and r["target"]
        assert r["peak_rss_mib"] > 0
    int8 = next(r for r in rows if "int8" in r["stage"])
    assert "cosine to fp32" in int8["note"]
    store = next(r for r in rows if "S3" in r["stage"])
    assert "objects written" in store["note"] and not store["note"].startswith("0 objects")
    assert "diversity selector" in capsys.readouterr().out  # the printed table
