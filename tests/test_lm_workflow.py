"""The whole LM-bootstrapping chain on the demo data: real e5 filter, fairseq, KenLM; the
outputs exist, every filter accounts for its records, and a second run, resumed from a bucket
and trained one translator at a time, is byte-identical."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUCKET, REPO, kill_when_stage_starts, lm_cmd, upload
from winnow.pipelines.config import load_config
from winnow.pipelines.lm_workflow import LmRun
from winnow.pipelines.stages import StageRunner
from winnow.translate import fairseq_nmt

# what a user takes away; a resumed run in a bucket must give the local run's bytes
LM_OUTPUTS = ("final_lm/lm.txt", "final_lm/lm.arpa", "final_lm/translations.jsonl")


@pytest.fixture(scope="module")
def lm_run(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    r = subprocess.run(lm_cmd(demo_data, out), cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_lm_chain_outputs_and_accounting(lm_run):
    metrics = json.loads((lm_run / "metrics.json").read_text())
    for row in ("seed_only", "target_text_only", "all"):
        assert metrics[f"{row}.perplexity"] > 1 and 0 <= metrics[f"{row}.oov_rate"] <= 1
    assert metrics["all.sentences"] >= metrics["seed_only.sentences"]
    # the peer row: the seed LM interpolated by KenLM with an LM of the filtered target
    # sides, next to the pooled LM of both
    assert metrics["target_text_only.sentences"] == metrics["seed_only.sentences"] + 300
    assert set(metrics["target_text_only.weights"]) == {"seed", "text"}
    assert metrics["target_text_only.pooled.perplexity"] > 1
    assert metrics["target_text_only.interpolated.perplexity"] > 1
    kind = metrics["target_text_only.deliverable"]
    assert metrics["target_text_only.perplexity"] == metrics[f"target_text_only.{kind}.perplexity"]
    import kenlm
    mixed = kenlm.Model(str(lm_run / "rows" / "target_text_only" / "interpolated.binary"))
    text = {w for line in (lm_run / "rows" / "target_text_only" / "text.txt").open() for w in line.split()}
    assert all(w in mixed for w in sorted(text)[:50])
    summary = json.loads((lm_run / "summary.json").read_text())
    bt = summary["bitext"]["stats"]
    assert bt["read"] == bt["kept"] + bt["dropped"] + bt["rejected"] and bt["kept"] == 300
    # the stage's key covers the content of the files it read
    (read_path, digest), = summary["bitext"]["inputs"].items()
    assert read_path.endswith("bitext.tsv") and len(digest) == 64
    (path, per_file), = bt["by_source"].items()
    assert path.endswith("bitext.tsv") and per_file["read"] == bt["read"] and per_file["kept"] == 300
    # the LM filter's threshold: the percentile of the held-out tuning split's scores whose
    # LM had the lowest tuning perplexity, tuned like λ
    from winnow.lm.scoring import LanguageModel, percentile_threshold
    tuned = summary["tune"]["stats"]
    grid = {float(q): ppl for q, ppl in tuned["lm_filter_grid"].items()}
    assert set(grid) == {0.0, 5.0, 20.0}
    assert tuned["lm_filter_percentile"] == min(grid, key=lambda q: (grid[q], q))
    tuning = [json.loads(x)["text"] for x in (lm_run / "prepare" / "tuning.jsonl").open()]
    assert tuned["lm_filter_threshold"] == pytest.approx(percentile_threshold(
        LanguageModel(lm_run / "seed_lm" / "seed.binary"), tuning, tuned["lm_filter_percentile"]))
    # self-training's fine-tune stops once validation stops improving (self_training.patience)
    st_variant = next(n for n in summary if n.startswith("nmt_") and n.endswith("_st"))
    assert "--patience 1" in (lm_run / st_variant / "train.log").read_text()
    assert summary[st_variant]["stats"]["stopped_early"] == fairseq_nmt.stopped_early(
        lm_run / st_variant / "train.log")
    # a base's stats say how far it trained, and whether max_minutes (2 in the demo) cut it
    # short of max_updates (60 in lm_cmd)
    base = summary["nmt_filtered"]["stats"]
    assert base["updates"] == fairseq_nmt.updates_reached(lm_run / "nmt_filtered" / "train.log") > 0
    assert base["cut_by_max_minutes"] == (base["updates"] < 60)
    tr = summary["rows"]["stats"]["all.translations"]
    assert tr["read"] == tr["kept"] + tr["dropped"] == 200
    # general text for the words the translations lack: the grid's amount with the lowest
    # tuning perplexity within the OOV goal, drawn from the bitext's target sides, and in
    # the LM's text after the seed and the kept translations
    from winnow.lm.general_text import Amount, Candidate, choose_amount
    amounts = {Amount(*map(int, k.split("+"))): Candidate(c["perplexity"], c["oov_rate"], c["words"])
               for k, c in tuned["general_text_grid"].items()}
    assert set(amounts) == {Amount(a, b) for a in (0, 100) for b in (0, 50)}
    chosen = tuned["general_text"]
    assert Amount(chosen["in_domain"], chosen["new_words"]) == choose_amount(amounts, chosen["oov_limit"])
    # the grid scores the text's own LM, the better of interpolated and pooled, even where
    # the seed alone is better still (the row then delivers the seed)
    own = summary["rows"]["stats"]["all.tuning_perplexity"]
    assert tuned["general_text_grid"][f"{chosen['in_domain']}+{chosen['new_words']}"][
        "perplexity"] == round(min(own["interpolated"], own["pooled"]), 3)
    general = (lm_run / "rows" / "all" / "general_text.txt").read_text().splitlines()
    assert len(general) == summary["rows"]["stats"]["all.general_sentences"]
    assert len(general) <= chosen["in_domain"] + chosen["new_words"]
    from winnow.lm.text import normalize
    targets = {normalize(json.loads(x)["tgt"]) for name in ("kept", "dropped")
               for p in (lm_run / "bitext").glob(f"{name}-*.jsonl") for x in p.open()}
    assert set(general) <= targets
    lm_text = (lm_run / "final_lm" / "lm.txt").read_text().splitlines()
    assert len(lm_text) == metrics["seed_only.sentences"] + tr["kept"] + len(general)
    assert lm_text[len(lm_text) - len(general):] == general
    assert (lm_run / "final_lm" / "lm.binary").stat().st_size > 0
    rows = [json.loads(x) for x in (lm_run / "final_lm" / "translations.jsonl").open()]
    assert {"nmt_score", "lm_per_token", "kept", "reason"} <= set(rows[0])
    assert (lm_run / "report.html").exists()


@pytest.mark.slow
def test_the_seed_without_sources_is_back_translated(lm_run):
    """The demo has no parallel_dev: a translator trained de -> en on the filtered bitext
    gives every seed and tuning sentence a source, and the filtered translator is
    fine-tuned on those pairs and kept or not by its loss on the back-translated tuning
    pairs, its parent's scored on the same pairs (not the general ones it was trained on)."""
    summary = json.loads((lm_run / "summary.json").read_text())
    read = lambda p: [json.loads(x) for x in p.open()]  # noqa: E731
    for name, part in (("seed_parallel", "seed"), ("tuning_parallel", "tuning")):
        pairs = read(lm_run / "back_translation" / f"{name}.jsonl")
        sentences = {r["id"]: r["text"] for r in read(lm_run / "prepare" / f"{part}.jsonl")}
        assert pairs and all(sentences[r["id"]] == r["ref"] and r["src"].strip() for r in pairs)
        assert summary["back_translation"]["stats"][name] == len(pairs)
    assert "--source-lang de --target-lang en" in (lm_run / "back_translation" /
                                                   "fairseq.log").read_text()
    sp = summary["nmt_filtered_sp"]["stats"]
    assert sp["seed_parallel_pairs"] == summary["back_translation"]["stats"]["seed_parallel"]
    base_recorded = fairseq_nmt.valid_loss(lm_run / "nmt_filtered" / "checkpoints" /
                                           "checkpoint_best.pt")
    log = (lm_run / "nmt_filtered_sp" / "train.log").read_text()
    validated = float(re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log)[0])
    assert sp["parent_valid_loss"] == validated != base_recorded
    assert sp["valid_loss"] <= sp["parent_valid_loss"]
    assert not (lm_run / "prepare" / "tuning_parallel.jsonl").exists()  # no chrF from these


@pytest.mark.slow
def test_an_ensemble_pools_independently_trained_translators(lm_run, demo_data, tmp_path):
    """`nmt.ensemble=2` on a finished run: the first member's stages are reused, a second
    chain trains from its own base with the next seed, and the `all` row decides each
    source once per translator and pools the kept translations."""
    import shutil

    out = tmp_path / "ens"
    shutil.copytree(lm_run, out)
    r = subprocess.run([a for a in lm_cmd(demo_data, out, "nmt.ensemble=2") if a != "--quiet"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "nmt_filtered: done earlier" in r.stderr and "nmt_filtered_m2: running" in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    last = [n for n in summary if n.startswith("nmt_filtered") and n.endswith("_m2")]
    assert sorted(last) == ["nmt_filtered_m2", "nmt_filtered_sp_m2", "nmt_filtered_sp_st_m2"]
    tr = summary["rows"]["stats"]["all.translations"]
    assert tr["read"] == tr["kept"] + tr["dropped"] == 400  # 200 sources x 2 translators
    rows = [json.loads(x) for x in (out / "final_lm" / "translations.jsonl").open()]
    by = {t: sorted(x["id"] for x in rows if x["translator"] == t)
          for t in ("filtered_sp_st", "filtered_sp_st_m2")}
    assert by["filtered_sp_st"] == by["filtered_sp_st_m2"] and len(by["filtered_sp_st"]) == 200
    kept = sum(x["kept"] for x in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["all.sentences"] == (metrics["seed_only.sentences"] + kept
                                        + metrics["all.general_sentences"])
    # λ and the filter percentile are tuned on the pool of both members' translations
    tuned = re.findall(r"tune: lm_weight=\S+ -> tuning perplexity \S+, OOV \S+ \((\d+) sentences\)",
                       r.stderr)
    assert tuned and all(200 < int(n) <= 400 for n in tuned)
    # the second base is another model: its own seed, not a copy of the first
    first, second = (out / f"nmt_{b}" / "checkpoints" / "checkpoint_best.pt"
                     for b in ("filtered", "filtered_m2"))
    assert first.read_bytes() != second.read_bytes()
    # the members decoding jointly are a translator of their own, scored as the row's
    # ensemble figure: against references that are the joint decode's own output, 100
    cfg = load_config(REPO / "configs" / "demo-lm.yaml",
                      [f"output_dir={out}", "nmt.ensemble=2"], check_files=False)
    st = StageRunner(out, quiet=True)
    st.records = summary
    run = LmRun(cfg, [], st)
    joint = run._translate(run.rows["all"].translators, TUNING_SOURCES, tmp_path / "joint")
    q = quality_against(run, joint, tmp_path)
    assert q["all.ensemble.chrf"] == pytest.approx(100.0)
    log = (tmp_path / "quality" / "all.ensemble" / "generate.log").read_text()
    loaded = re.search(r"loading model\(s\) from (\S+)", log).group(1).split(":")
    assert [Path(p).parent.parent.name for p in loaded] == ["nmt_filtered_sp_st",
                                                             "nmt_filtered_sp_st_m2"]
    st.release()


@pytest.mark.slow
def test_lm_chain_runs_with_inputs_and_outputs_in_a_bucket(lm_run, demo_data, s3, tmp_path):
    """Every input and the output_dir in S3 (moto): the Beam stages write their shards to
    the bucket, fairseq and lmplz work in the local mirror and their outputs are uploaded.
    Killed as the filtered translator starts training, then resumed on a machine without
    the mirror: the finished stages come from the bucket, the rest run, and the final LM
    and the translations are the local run's bytes.  This run trains its translators one
    at a time (the local run two side by side), so the same bytes also show that the
    outputs do not depend on the schedule."""
    from winnow.pipelines import fileio
    data, run = f"s3://{BUCKET}/lm-data", f"s3://{BUCKET}/runs/lm"
    upload(demo_data, data, s3)
    scratch = tmp_path / "scratch"
    env = {**os.environ, "WINNOW_SCRATCH": str(scratch)}
    cmd = lm_cmd(data, run, "nmt.parallel=1") + s3
    kill_when_stage_starts(cmd, scratch / "s3" / BUCKET / "runs" / "lm", "nmt_filtered", env)
    assert fileio.exists(f"{run}/bitext/_DONE.json")
    assert not fileio.exists(f"{run}/nmt_filtered/_DONE.json")
    shutil.rmtree(scratch)
    r = subprocess.run([a for a in cmd if a != "--quiet"], cwd=REPO, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bitext: done earlier" in r.stderr and "nmt_filtered: running" in r.stderr
    for rel in LM_OUTPUTS:
        assert fileio.read_bytes(f"{run}/{rel}") == (lm_run / rel).read_bytes(), rel
    names = fileio.list_tree(run)
    assert {"final_lm/lm.binary", "bitext/kept-00000-of-00001.jsonl", "metrics.json",
            "final_lm/_DONE.json", "nmt_filtered/checkpoints/checkpoint_best.pt"} <= set(names)
    kept = [json.loads(x) for x in fileio.read_bytes(f"{run}/bitext/filtered.jsonl").splitlines()]
    local = [json.loads(x) for x in (lm_run / "bitext" / "filtered.jsonl").open()]
    assert [r["source"] for r in kept] == [f"{data}/{r['source'].rsplit('/', 1)[-1]}" for r in local]
    assert [r["tgt"] for r in kept] == [r["tgt"] for r in local]


def test_rows_and_translator_chains(demo_data, tmp_path):
    """`all` fine-tunes the filtered translator on the seed's parallel pairs, then self-trains
    it; without parallel sources the seed is back-translated, and without that either it
    only self-trains and the seed_parallel row goes.  Every row has a place in the table's
    order."""
    from winnow.pipelines.lm_workflow import ROW_NAMES, Row, back_translates, chain, rows_for

    cfg = load_config(REPO / "configs" / "massive-de.yaml", [f"output_dir={tmp_path}"],
                      check_files=False)
    rows = rows_for(cfg)
    assert list(rows) == [r for r in ROW_NAMES if r in rows] and "seed_parallel" in rows
    assert chain(rows["all"].nmt) == ["filtered", "filtered_sp", "filtered_sp_st"]
    assert chain(rows["seed_parallel"].nmt) == ["unfiltered", "unfiltered_sp"]
    # the shipped config pools three translators in `all`, each its own chain
    assert rows["all"].translators == ["filtered_sp_st", "filtered_sp_st_m2", "filtered_sp_st_m3"]
    assert chain("filtered_sp_st_m2") == ["filtered_m2", "filtered_sp_m2", "filtered_sp_st_m2"]
    assert rows["seed_parallel"].translators == ["unfiltered_sp"]  # only `all` pools members
    one = rows_for(load_config(REPO / "configs" / "massive-de.yaml",
                               [f"output_dir={tmp_path}", "nmt.ensemble=1"], check_files=False))
    assert one["all"].translators == ["filtered_sp_st"]
    # general text joins `all` and has its own row on the unfiltered translator; off, both go
    assert rows["all"].general_text and rows["general_text"] == Row("unfiltered", general_text=True)
    off = rows_for(load_config(REPO / "configs" / "massive-de.yaml",
                               [f"output_dir={tmp_path}", "general_text.enabled=false"],
                               check_files=False))
    assert "general_text" not in off and not off["all"].general_text
    assert rows["target_text_only"].target_text and rows["target_text_only"].nmt is None
    hi = load_config(REPO / "configs" / "snips-hi.yaml", [f"output_dir={tmp_path}"], check_files=False)
    assert hi.parallel_dev is None and back_translates(hi) and not back_translates(cfg)
    assert chain(rows_for(hi)["all"].nmt) == ["filtered", "filtered_sp", "filtered_sp_st"]
    assert "seed_parallel" in rows_for(hi)
    no_bt = load_config(REPO / "configs" / "snips-hi.yaml",
                        [f"output_dir={tmp_path}", "back_translation.enabled=false"],
                        check_files=False)
    assert chain(rows_for(no_bt)["all"].nmt) == ["filtered", "filtered_st"]
    assert "seed_parallel" not in rows_for(no_bt) and not back_translates(no_bt)
    assert len(hi.bitext) == 3 and {b.format for b in hi.bitext} == {"bitext"}


def test_bf16_precision_re_keys_the_translators_and_float32_keeps_earlier_keys(tmp_path):
    """Translators trained in bfloat16 are other translators: every NMT stage, its n-best
    lists and what reads them get new keys, the data stages keep theirs. float32 leaves
    `precision` out of the keys, so runs made before the setting keep their translators."""
    from winnow.pipelines.lm_workflow import _keys

    inputs = {"prepare": {}, "bitext": {}}
    variants = ["filtered", "filtered_sp"]

    def keys(*overrides: str) -> dict[str, str]:
        cfg = load_config(REPO / "configs" / "snips-hi.yaml",
                          [f"output_dir={tmp_path}", *overrides], check_files=False)
        return _keys(cfg, variants, inputs)

    fp32, bf16 = keys(), keys("nmt.precision=bf16")
    assert fp32 == keys("nmt.precision=fp32")
    same = {n for n in fp32 if fp32[n] == bf16[n]}
    assert same == {"prepare", "seed_lm", "bitext", "subword"}, same
    assert {"back_translation", "nmt_filtered", "nbest_filtered_sp", "tune"} <= set(fp32) - same


@pytest.mark.parametrize("units", [True, False])
def test_auto_precision_is_bf16_where_the_cpu_has_bfloat16_units(tmp_path, monkeypatch, units):
    """``precision: auto`` resolves when the config loads, so every stage key is the one of
    the precision that runs: bf16 on a CPU with bfloat16 units, fp32 (the keys of earlier
    runs) on one without."""
    from winnow.translate import fairseq_nmt

    monkeypatch.setattr(fairseq_nmt, "bf16_units", lambda: units)
    cfg = load_config(REPO / "configs" / "massive-de.yaml", [f"output_dir={tmp_path}"],
                      check_files=False)
    assert cfg.nmt.precision == ("bf16" if units else "fp32")
    pinned = load_config(REPO / "configs" / "massive-de.yaml",
                         [f"output_dir={tmp_path}", "nmt.precision=fp32"], check_files=False)
    assert pinned.nmt.precision == "fp32"


TUNING_SOURCES = ["set an alarm for seven", "what is the weather today", "play some music"]


def quality_against(run, refs: list[list[tuple[str, float, int]]], tmp_path: Path) -> dict:
    """``run.nmt_quality`` with a stand-in tuning split: ``TUNING_SOURCES``, whose references
    are the top-1 of the given n-best lists (which also stand in for the `all` row's
    translators' own)."""
    pairs = [(str(i), s, lst) for i, (s, lst) in enumerate(zip(TUNING_SOURCES, refs))]
    (run.out / "prepare" / "tuning_parallel.jsonl").write_text("".join(
        json.dumps({"id": i, "src": s, "ref": lst[0][0]}) + "\n" for i, s, lst in pairs))
    for name in run.rows["all"].translators:
        (run.out / f"nbest_{name}" / "tuning_nbest.jsonl").write_text("".join(
            json.dumps({"id": i, "src": s, "ref": lst[0][0], "nbest": lst}) + "\n"
            for i, s, lst in pairs))
    return run.nmt_quality(tmp_path / "quality")


@pytest.mark.slow
def test_nmt_quality_scores_every_translator_trained(lm_run, tmp_path):
    """chrF/BLEU on the tuning split's parallel pairs for every translator of the run, rows
    or not: with references that are one translator's own top-1 output, it scores 100."""
    run_dir = tmp_path / "run"
    shutil.copytree(lm_run, run_dir)
    cfg = load_config(REPO / "configs" / "demo-lm.yaml", [f"output_dir={run_dir}"], check_files=False)
    st = StageRunner(run_dir, quiet=True)
    st.records = json.loads((run_dir / "summary.json").read_text())
    run = LmRun(cfg, [], st)
    own = run._translate(["filtered"], TUNING_SOURCES, tmp_path / "gen")
    out = quality_against(run, own, tmp_path)
    assert out["variant.filtered.chrf"] == pytest.approx(100.0)
    assert set(out) >= {"variant.filtered_sp_st.chrf", "variant.filtered_sp_st.bleu", "all.chrf"}
    assert 0 <= out["variant.filtered_sp_st.chrf"] <= 100
    st.release()
