"""fairseq NMT: binarise, train, fine-tune and generate n-best lists.

winnow drives fairseq's own command-line entry points (``fairseq_cli.preprocess``,
``train`` and ``generate``) in a subprocess of the same interpreter, so the real
trainer and beam search run, a crash cannot take the pipeline down with it, and
fairseq's global state never leaks between stages.  Sizes default to a transformer
small enough to train on two CPU cores within the configured time budget.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from winnow.translate.subword import Subword

LN2 = math.log(2.0)
# fairseq's --user-dir, given to every fairseq command by `_run`: a checkpoint trained under
# winnow's own task names it, and fairseq's validation sets up the task a checkpoint names
USER_DIR = Path(__file__).parent / "fairseq_tasks"
BF16_TASK = "translation_bf16"  # nmt.precision bf16; registered in fairseq_tasks/__init__.py
# a fine-tune's parent loss, for fairseq_tasks/__init__.py to start --patience from
PATIENCE_FROM_ENV = "WINNOW_PATIENCE_FROM_LOSS"


@dataclass
class NmtSettings:
    """Model and trainer settings (the ``nmt`` block of an LM config)."""

    encoder_layers: int = 2
    decoder_layers: int = 2
    embed_dim: int = 256
    ffn_dim: int = 512
    heads: int = 4
    dropout: float = 0.1
    lr: float = 1e-3
    warmup_updates: int = 200
    max_tokens: int = 4096
    max_updates: int = 2000
    max_minutes: float = 20.0
    finetune_updates: int = 500
    beam: int = 5
    nbest: int = 5
    lenpen: float = 1.0  # fairseq's --lenpen: the beam ranks by log-prob / length ** lenpen
    seed: int = 1
    threads: int = 1  # torch threads per fairseq process (OMP_NUM_THREADS)
    precision: str = "fp32"  # "bf16": training steps under CPU bfloat16 autocast
    lr_schedule: str = "inverse_sqrt"  # a base's; "linear": decays to 0 at max_updates
    extra_train_args: list[str] = field(default_factory=list)


def bf16_units() -> bool:
    """Whether this CPU has bfloat16 matrix units (AVX512-BF16 or AMX), where training
    steps under bfloat16 autocast pay: two en-de bases side by side ran 1.41 times the
    updates/s of float32 on an AMD EPYC with AVX512-BF16 (stop 54).  Without them autocast
    converts in software and a step is slower."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    # torch >= 2.6 loads checkpoints with weights_only=True, which fairseq's
    # checkpoints (argparse Namespaces inside) do not survive.
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # log lines (and the progress bar) as they happen
    return env


# On Linux the child asks to be sent SIGTERM when the process that started it dies
# (prctl PR_SET_PDEATHSIG), and exits at once if that already happened: a pipeline that a
# scheduler or ``kill`` stops must not leave fairseq training on the cores.
_DIE_WITH_PARENT = """\
import ctypes, os, runpy, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(143)
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _launcher(module: str) -> list[str]:
    """The interpreter arguments that run ``module`` as ``python -m`` would."""
    if sys.platform.startswith("linux"):
        return ["-c", _DIE_WITH_PARENT, str(os.getpid()), module]
    return ["-m", module]


_UPDATES = re.compile(r"num_updates[\"=: ]+(\d+)")


def _run(module: str, args: list[str], log_path: Path, total: int | None = None,
         unit: str = "updates", counter: re.Pattern | None = None, threads: int = 1,
         env: dict[str, str] | None = None) -> str:
    """Run a fairseq entry point, streaming its output to ``log_path``.

    At a terminal (tqdm's ``disable=None``: quiet when piped, as under CI) a bar follows
    the work: updates parsed from the trainer's log lines, or sources during generation.
    """
    from tqdm import tqdm

    cmd = [sys.executable, *_launcher(module), *args, "--user-dir", str(USER_DIR)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    counter = counter or _UPDATES
    lines: list[str] = []
    bar = tqdm(total=total, unit=unit, desc=module.split(".")[-1], leave=False,
               disable=None if total else True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(threads, env),
                                text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()  # the log follows the work (tail -f), not 8 KiB behind it
            lines.append(line)
            m = counter.search(line)
            if m and total:
                n = int(m.group(1)) if m.groups() else bar.n + 1
                bar.update(max(0, n - bar.n))
        proc.wait()
    bar.close()
    out = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed (exit {proc.returncode}); see {log_path}:\n"
                           + out[-3000:])
    return out


def write_split(subword: Subword, pairs: list[tuple[str, str]], prefix: Path,
                src: str, tgt: str) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{prefix}.{src}", "w", encoding="utf-8") as fs, \
            open(f"{prefix}.{tgt}", "w", encoding="utf-8") as ft:
        for s, t in pairs:
            fs.write(subword.encode(s) + "\n")
            ft.write(subword.encode(t) + "\n")


def binarize(work: Path, subword: Subword, train: list[tuple[str, str]],
             valid: list[tuple[str, str]], src: str, tgt: str,
             dict_from: Path | None = None) -> Path:
    """Subword-encode and binarise; ``dict_from`` reuses an earlier run's joint dictionary."""
    text = work / "text"
    write_split(subword, train, text / "train", src, tgt)
    write_split(subword, valid, text / "valid", src, tgt)
    dest = work / "data-bin"
    args = ["--source-lang", src, "--target-lang", tgt, "--trainpref", str(text / "train"),
            "--validpref", str(text / "valid"), "--destdir", str(dest), "--workers", "1",
            "--joined-dictionary"]
    if dict_from is not None:
        args += ["--srcdict", str(dict_from / f"dict.{src}.txt")]
    _run("fairseq_cli.preprocess", args, work / "fairseq.log")
    return dest


def _lr_scheduler(s: NmtSettings, restore: Path | None, updates: int) -> list[str]:
    """fairseq's scheduler: a base's ``linear`` schedule decays after the warm-up to 0 at
    its last update (``polynomial_decay``), which spends a fixed update budget better than
    inverse square root; a fine-tune, restored from its parent, keeps inverse square root."""
    if s.lr_schedule == "linear" and restore is None:
        # the total is given: fairseq's command line leaves its default (--max-update) null
        return ["--lr-scheduler", "polynomial_decay", "--total-num-update", str(updates)]
    return ["--lr-scheduler", "inverse_sqrt"]


def train(data_bin: Path, save_dir: Path, s: NmtSettings, log: Path,
          restore: Path | None = None, updates: int | None = None, patience: int = 0,
          average_last: int = 1, parent_loss: float | None = None) -> Path:
    """Train (or, with ``restore``, fine-tune) a transformer; returns the best checkpoint.
    ``patience`` > 0 stops after that many validations in a row fail to beat the best
    (fairseq's ``--patience``): a fine-tune that over-fits stops instead of running on.
    ``average_last`` > 1 returns instead the parameter mean of the last that many saved
    checkpoints (``average_checkpoints``), validated on the same pairs.  A fine-tune keeps
    ``restore`` where no update beats it on the validation pairs: by ``parent_loss``, its
    loss on these pairs, where it was validated on others (default: its recorded loss).
    The parent is the fine-tune's update 0, so its patience counts from the parent's loss:
    a fine-tune whose first validations do not beat the parent stops there (en-de
    self-training ran 150 updates more before, in every chain, to keep the parent).  With
    patience it validates every twelfth of its budget instead of every fourth: the
    validations decide when it stops, and one (with its save) costs about 2 s where 50
    updates cost 40."""
    save_dir.mkdir(parents=True, exist_ok=True)
    every = max(25, (updates or s.max_updates) // (12 if patience > 0 else 4))
    args = [str(data_bin), "--arch", "transformer", "--share-all-embeddings",
            "--encoder-layers", str(s.encoder_layers), "--decoder-layers", str(s.decoder_layers),
            "--encoder-embed-dim", str(s.embed_dim), "--decoder-embed-dim", str(s.embed_dim),
            "--encoder-ffn-embed-dim", str(s.ffn_dim), "--decoder-ffn-embed-dim", str(s.ffn_dim),
            "--encoder-attention-heads", str(s.heads), "--decoder-attention-heads", str(s.heads),
            "--dropout", str(s.dropout), "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
            "--lr", str(s.lr), *_lr_scheduler(s, restore, updates or s.max_updates),
            "--warmup-updates", str(s.warmup_updates), "--criterion",
            "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", str(s.max_tokens), "--max-update", str(updates or s.max_updates),
            "--save-dir", str(save_dir),
            "--seed", str(s.seed), "--cpu", "--no-epoch-checkpoints", "--no-progress-bar",
            # small corpora make epochs of a few updates: validate and save by updates
            # (fairseq validates a save that falls on an epoch's end only by these)
            "--save-interval", "1000000", "--validate-interval", "1000000",
            "--save-interval-updates", str(every), "--validate-interval-updates", str(every),
            "--keep-interval-updates", str(max(1, average_last)),
            "--log-format", "simple", "--log-interval", "50", "--num-workers", "0",
            "--skip-invalid-size-inputs-valid-test", *s.extra_train_args]
    if s.precision == "bf16":
        args += ["--task", BF16_TASK]
    if patience > 0:
        args += ["--patience", str(patience)]
    env: dict[str, str] = {}
    if restore is not None:
        recorded = valid_loss(restore)
        parent = recorded if parent_loss is None else parent_loss
        if patience > 0:
            env[PATIENCE_FROM_ENV] = repr(parent)
        # fairseq's --stop-time-hours counts the restored checkpoint's cumulative training
        # time, which would end a fine-tune at once: a fine-tune is bounded by updates only
        args += ["--restore-file", str(restore), "--reset-optimizer", "--reset-lr-scheduler",
                 "--reset-dataloader", "--reset-meters"]
    else:
        args += ["--stop-time-hours", f"{s.max_minutes / 60:.4f}"]
    _run("fairseq_cli.train", args, log, total=updates or s.max_updates, threads=s.threads,
         env=env)
    best = save_dir / "checkpoint_best.pt"
    if average_last > 1:
        average_checkpoints([c for _, c in saved_checkpoints(save_dir)[-average_last:]], best)
        set_valid_loss(best, validate(data_bin, best, s, log))
    if not best.exists():
        return save_dir / "checkpoint_last.pt"
    if restore is None:
        return best
    if valid_loss(best) >= parent:
        # the restored model is the fine-tune's update 0: kept where no update beat it on
        # the validation pairs
        shutil.copyfile(restore, best)
        if parent != recorded:
            set_valid_loss(best, parent)
    return best


EARLY_STOP = "early stop since valid performance hasn't improved"  # fairseq's log lines
TIME_LIMIT = "Stopping training due to cumulative_training_time"


def _last_run(log: Path) -> str:
    """The last run logged to ``log`` (``_run`` appends each after a ``$ command`` line)."""
    return log.read_text(encoding="utf-8").rsplit("\n$ ", 1)[-1]


def stopped_early(log: Path) -> bool:
    """Whether the last training run logged to ``log`` ended by ``--patience``."""
    return EARLY_STOP in _last_run(log)


def cut_by_time(log: Path) -> bool:
    """Whether the last training run logged to ``log`` ended at ``max_minutes``
    (``--stop-time-hours``) before its update budget: its translator then depends on how
    busy the machine was."""
    return TIME_LIMIT in _last_run(log)


def updates_reached(log: Path) -> int:
    """The last update the last training run logged to ``log`` reached."""
    return max((int(n) for n in _UPDATES.findall(_last_run(log))), default=0)


def valid_loss(checkpoint: Path) -> float:
    """The validation loss fairseq recorded in a checkpoint (the pairs it validated on)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return float(state["extra_state"]["val_loss"])


def saved_checkpoints(save_dir: Path) -> list[tuple[int, Path]]:
    """(update, path) of every distinct save in ``save_dir``, oldest first: the interval
    saves (``checkpoint_<epoch>_<update>.pt``) and ``checkpoint_last.pt``, which fairseq
    writes alone when training ends on an epoch's last batch."""
    import torch

    saves = {int(c.stem.rsplit("_", 1)[1]): c for c in save_dir.glob("checkpoint_*_*.pt")}
    last = save_dir / "checkpoint_last.pt"
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=False)
        saves.setdefault(int(state["optimizer_history"][-1]["num_updates"]), last)
    return sorted(saves.items())


def average_checkpoints(checkpoints: list[Path], out: Path) -> None:
    """Write the parameter mean of ``checkpoints`` (fairseq's ``average_checkpoints.py``
    recipe: the last checkpoint's state with every model tensor replaced by the mean).
    A short fine-tune's last saves sit around the optimum it oscillates about; their mean
    translated the en-de tuning pairs about 1 chrF better than the lowest-loss one."""
    import torch

    states = [torch.load(c, map_location="cpu", weights_only=False) for c in checkpoints]
    state = states[-1]
    state["model"] = {k: (sum(st["model"][k].double() for st in states) / len(states)
                          ).to(v.dtype) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    torch.save(state, out)


_VALID = re.compile(r"valid on 'valid' subset \| loss ([\d.]+)")


def validate(data_bin: Path, checkpoint: Path, s: NmtSettings, log: Path) -> float:
    """The checkpoint's loss on the ``valid`` pairs, as fairseq's trainer reports it."""
    out = _run("fairseq_cli.validate", [str(data_bin), "--task", "translation",
                                        "--path", str(checkpoint), "--cpu",
                                        "--valid-subset", "valid", "--max-tokens",
                                        str(s.max_tokens), "--num-workers", "0",
                                        "--skip-invalid-size-inputs-valid-test"],
               log, threads=s.threads)
    return float(_VALID.findall(out)[-1])


def set_valid_loss(checkpoint: Path, loss: float) -> None:
    """Record ``loss`` as the checkpoint's validation loss (what ``valid_loss`` reads)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["extra_state"]["val_loss"] = loss
    torch.save(state, checkpoint)


_H = re.compile(r"^H-(\d+)\t(\S+)\t(.*)$")
_P = re.compile(r"^P-(\d+)\t(.*)$")


def generate_nbest(data_bin: Path, checkpoints: list[Path], subword: Subword,
                   sources: list[str], src: str, tgt: str, s: NmtSettings, work: Path
                   ) -> list[list[tuple[str, float, int]]]:
    """n-best translations of ``sources``: per source, [(text, natural-log prob, tokens)]
    in beam order.  Several checkpoints (trained on the same dictionary) decode jointly:
    fairseq's ensemble averages their next-token probabilities at every beam step.

    Uses ``fairseq-interactive`` (raw source lines, no dummy target side).  Scores are
    sums of fairseq's positional log-probabilities (reported in base 2),
    converted to natural log, so they are sentence log-probabilities that the LM
    rescoring can add to; ``tokens`` is how many positions were scored (subwords and
    end of sentence): the beam orders by log-prob / tokens ** ``s.lenpen``.
    """
    gen = work / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    src_file = gen / f"input.{src}"
    src_file.write_text("".join(subword.encode(t) + "\n" for t in sources), encoding="utf-8")
    out = _run("fairseq_cli.interactive",
               [str(data_bin), "--path", ":".join(map(str, checkpoints)), "--source-lang", src,
                "--target-lang", tgt, "--beam", str(max(s.beam, s.nbest)), "--nbest", str(s.nbest),
                "--lenpen", str(s.lenpen),
                "--buffer-size", "512", "--batch-size", "128", "--cpu", "--seed", str(s.seed),
                "--max-len-a", "1.5", "--max-len-b", "10", "--input", str(src_file)],
               work / "generate.log", total=len(sources), unit="sentences",
               counter=re.compile(r"^S-\d+\t"), threads=s.threads)
    results: list[list[tuple[str, float, int]]] = [[] for _ in sources]
    pending: tuple[int, str] | None = None
    for line in out.splitlines():
        m = _H.match(line)
        if m:
            pending = (int(m.group(1)), m.group(3))
            continue
        p = _P.match(line)
        if p and pending is not None and int(p.group(1)) == pending[0]:
            positional = [float(x) for x in p.group(2).split()]
            results[pending[0]].append((subword.decode(pending[1]), sum(positional) * LN2,
                                        len(positional)))
            pending = None
    return results  # in fairseq's own (length-normalised beam) order
