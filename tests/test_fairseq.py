"""A tiny real fairseq training and n-best generation (sentencepiece subwords)."""
import os
import re
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from winnow.translate import fairseq_nmt
from winnow.translate.subword import Subword

PAIRS = [(f"set an alarm for {n}", f"stelle einen wecker für {g}") for n, g in
         [("one", "eins"), ("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf"),
          ("six", "sechs"), ("seven", "sieben"), ("eight", "acht")]] * 8


@pytest.mark.slow
def test_train_and_nbest(tmp_path):
    sw = Subword.train([t for p in PAIRS for t in p], tmp_path / "spm", vocab_size=60)
    assert sw.decode(sw.encode("stelle einen wecker")) == "stelle einen wecker"
    s = fairseq_nmt.NmtSettings(encoder_layers=1, decoder_layers=1, embed_dim=32, ffn_dim=64,
                                heads=2, max_updates=60, warmup_updates=10, lr=0.005,
                                max_tokens=1024, beam=3, nbest=3, max_minutes=3)
    data = fairseq_nmt.binarize(tmp_path, sw, PAIRS, PAIRS[:8], "en", "de")
    ckpt = fairseq_nmt.train(data, tmp_path / "ckpt", s, tmp_path / "train.log")
    assert ckpt.exists()
    assert fairseq_nmt.updates_reached(tmp_path / "train.log") == 60
    assert not fairseq_nmt.cut_by_time(tmp_path / "train.log")
    # a time limit far below the budget's needs (0.72 s) stops training short of it, and
    # the log says so
    fairseq_nmt.train(data, tmp_path / "ckpt_cut", replace(s, max_updates=5000, max_minutes=0.012),
                      tmp_path / "cut.log")
    assert fairseq_nmt.cut_by_time(tmp_path / "cut.log")
    assert 0 < fairseq_nmt.updates_reached(tmp_path / "cut.log") < 5000
    sources = ["set an alarm for two", "set an alarm"]
    out = fairseq_nmt.generate_nbest(data, [ckpt], sw, sources, "en", "de", s, tmp_path)
    assert len(out) == 2 and all(len(lst) == 3 for lst in out)
    assert all(score < 0 for lst in out for _, score, _ in lst)
    assert all(isinstance(t, str) for lst in out for t, _, _ in lst)
    # in the beam's order: log-probability per scored position, best first
    assert all(lst == sorted(lst, key=lambda h: -h[1] / h[2]) for lst in out)
    assert all(n >= 2 for lst in out for _, _, n in lst)  # at least a subword and </s>
    # a length penalty re-ranks the same finished hypotheses by log-prob / length ** lenpen,
    # so above 1 the first one is never shorter
    longer = fairseq_nmt.generate_nbest(data, [ckpt], sw, sources, "en", "de",
                                        replace(s, lenpen=3.0), tmp_path / "lp")
    assert all(lst == sorted(lst, key=lambda h: -h[1] / h[2] ** 3.0) for lst in longer)
    assert [sorted(lst) for lst in longer] == [sorted(lst) for lst in out]
    assert all(a[0][2] >= b[0][2] for a, b in zip(longer, out))

    # a fine-tune that learns the wrong thing (every target's words reversed) with patience
    # 1 stops at the first validation that does not beat the best, long before its budget;
    # the best so far is its parent (update 0), so that is the first validation, and the
    # fine-tune keeps the parent
    wrong = [(a, " ".join(reversed(b.split()))) for a, b in PAIRS]
    bad = fairseq_nmt.binarize(tmp_path / "ft", sw, wrong, PAIRS[:8], "en", "de",
                               dict_from=data)
    log = tmp_path / "ft.log"
    tuned = fairseq_nmt.train(bad, tmp_path / "ckpt_ft", s, log, restore=ckpt, updates=200,
                              patience=1)
    assert fairseq_nmt.stopped_early(log)
    validated = [(int(n), float(loss)) for loss, n in re.findall(
        r"valid on 'valid' subset \| loss ([\d.]+) .*num_updates (\d+)", log.read_text())]
    assert [n for n, _ in validated] == [25], validated  # every max(25, 200 // 12) updates
    assert validated[0][1] > fairseq_nmt.valid_loss(ckpt)
    assert fairseq_nmt.valid_loss(tuned) == fairseq_nmt.valid_loss(ckpt)

    # the mean of a fine-tune's last two saves: fairseq's own validation scores it as the
    # trainer scored its checkpoints, and it is what the fine-tune returns (unless the
    # parent is better on the validation pairs)
    assert abs(fairseq_nmt.validate(data, ckpt, s, tmp_path / "v.log")
               - fairseq_nmt.valid_loss(ckpt)) < 1e-3
    avg_dir = tmp_path / "ckpt_avg"
    tuned = fairseq_nmt.train(data, avg_dir, s, tmp_path / "avg.log", restore=ckpt, updates=50,
                              average_last=2)
    updates, saved = zip(*fairseq_nmt.saved_checkpoints(avg_dir))
    assert updates == (25, 50)
    params = [torch.load(c, map_location="cpu", weights_only=False)["model"]
              for c in (*saved, tuned)]
    loss = fairseq_nmt.valid_loss(tuned)
    assert loss < fairseq_nmt.valid_loss(ckpt)  # 50 more updates on the same pairs
    assert all(torch.allclose(params[2][k].float(), (params[0][k].float()
                                                      + params[1][k].float()) / 2, atol=1e-6)
               for k in params[2])
    assert not torch.equal(params[2]["encoder.layers.0.fc1.weight"],
                           params[1]["encoder.layers.0.fc1.weight"])
    assert fairseq_nmt.validate(data, tuned, s, tmp_path / "v.log") == loss

    # a second model (another seed) and both decoding jointly, as an ensemble row's
    # quality figure does: the joint scores are neither model's own
    other = fairseq_nmt.train(data, tmp_path / "ckpt2", replace(s, seed=2), tmp_path / "train2.log")
    alone = fairseq_nmt.generate_nbest(data, [other], sw, sources, "en", "de", s, tmp_path / "b")
    joint = fairseq_nmt.generate_nbest(data, [ckpt, other], sw, sources, "en", "de", s,
                                       tmp_path / "j")
    assert len(joint) == 2 and all(len(lst) == 3 for lst in joint)
    scores = [{t: sc for t, sc, _ in lst} for lst in (out[0], alone[0], joint[0])]
    shared = set(scores[0]) & set(scores[1]) & set(scores[2])
    assert shared, scores
    assert all(scores[2][t] not in (scores[0][t], scores[1][t]) for t in shared)


def _running(pid: int) -> bool:
    """A process that exists and is not a zombie waiting to be reaped."""
    try:
        return "\nState:\tZ" not in open(f"/proc/{pid}/status").read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_stopped_pipeline_takes_its_fairseq_process_with_it(tmp_path):
    """``kill`` of the process that runs fairseq (a scheduler stopping a job) ends the
    fairseq child too, instead of leaving it training on the cores."""
    (tmp_path / "sleeper.py").write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from winnow.translate.fairseq_nmt import _run; "
         "_run('sleeper', [sys.argv[1]], Path(sys.argv[2]))", str(pid_file),
         str(tmp_path / "log")], env={**os.environ, "PYTHONPATH": str(tmp_path)})
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert _running(child)
    parent.terminate()
    parent.wait(timeout=30)
    deadline = time.monotonic() + 20
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child)


@pytest.mark.slow
def test_bf16_precision_trains_under_autocast_and_decodes_as_before(tmp_path):
    """``precision: bf16`` trains through winnow's ``translation_bf16`` task (the training
    step in CPU bfloat16 autocast, the weights float32): the same seed gives other weights
    than float32 training, a validation loss close to it, and a checkpoint that fairseq's
    validation and beam search read as any other."""
    sw = Subword.train([t for p in PAIRS for t in p], tmp_path / "spm", vocab_size=60)
    s = fairseq_nmt.NmtSettings(encoder_layers=1, decoder_layers=1, embed_dim=32, ffn_dim=64,
                                heads=2, max_updates=60, warmup_updates=10, lr=0.005,
                                max_tokens=1024, beam=3, nbest=3, max_minutes=3)
    data = fairseq_nmt.binarize(tmp_path, sw, PAIRS, PAIRS[:8], "en", "de")
    fp32 = fairseq_nmt.train(data, tmp_path / "fp32", s, tmp_path / "fp32.log")
    bf16 = fairseq_nmt.train(data, tmp_path / "bf16", replace(s, precision="bf16"),
                             tmp_path / "bf16.log")
    assert f"'_name': '{fairseq_nmt.BF16_TASK}'" in (tmp_path / "bf16.log").read_text()
    assert f"'_name': '{fairseq_nmt.BF16_TASK}'" not in (tmp_path / "fp32.log").read_text()
    a, b = (torch.load(c, map_location="cpu", weights_only=False)["model"] for c in (fp32, bf16))
    assert all(b[k].dtype == a[k].dtype for k in a)
    assert not torch.equal(a["encoder.layers.0.fc1.weight"], b["encoder.layers.0.fc1.weight"])
    loss_a, loss_b = fairseq_nmt.valid_loss(fp32), fairseq_nmt.valid_loss(bf16)
    assert abs(loss_a - loss_b) < 0.1 * loss_a, (loss_a, loss_b)
    assert abs(fairseq_nmt.validate(data, bf16, s, tmp_path / "v.log") - loss_b) < 1e-3
    out = fairseq_nmt.generate_nbest(data, [bf16], sw, ["set an alarm for two"], "en", "de", s,
                                     tmp_path / "gen")
    assert len(out) == 1 and len(out[0]) == 3


def _final_lr(log) -> float:
    """The learning rate of the last update a fairseq training log reports."""
    return float(re.findall(r"\| lr ([\d.e-]+) \|", log.read_text())[-1])


def test_a_linear_schedule_decays_a_base_to_zero_and_its_fine_tune_keeps_inverse_sqrt(tmp_path):
    """``lr_schedule: linear`` ends a base's budget at learning rate 0 (inverse square root
    is still at lr * sqrt(warm-up / updates) there); a fine-tune of that base keeps inverse
    square root, so it does not start from a spent schedule."""
    sw = Subword.train([t for p in PAIRS for t in p], tmp_path / "spm", vocab_size=60)
    s = fairseq_nmt.NmtSettings(encoder_layers=1, decoder_layers=1, embed_dim=32, ffn_dim=64,
                                heads=2, max_updates=40, warmup_updates=10, lr=0.005,
                                max_tokens=1024, beam=3, nbest=3, max_minutes=3)
    data = fairseq_nmt.binarize(tmp_path, sw, PAIRS, PAIRS[:8], "en", "de")
    fairseq_nmt.train(data, tmp_path / "sqrt", s, tmp_path / "sqrt.log")
    assert _final_lr(tmp_path / "sqrt.log") == pytest.approx(0.005 * (10 / 40) ** 0.5, rel=1e-3)
    base = fairseq_nmt.train(data, tmp_path / "linear", replace(s, lr_schedule="linear"),
                             tmp_path / "linear.log")
    assert fairseq_nmt.updates_reached(tmp_path / "linear.log") == 40
    assert _final_lr(tmp_path / "linear.log") == 0
    fairseq_nmt.train(data, tmp_path / "ft", replace(s, lr_schedule="linear"),
                      tmp_path / "ft.log", restore=base, updates=20)
    assert _final_lr(tmp_path / "ft.log") == pytest.approx(0.005 * (10 / 20) ** 0.5, rel=1e-3)

