"""Locating and running KenLM's ``lmplz``, ``build_binary`` and ``interpolate``.

No PyPI wheel ships these binaries; ``make kenlm`` (part of ``make setup``) builds
them from the kenlm sdist into ``tools/kenlm/bin``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_ORDER = 3
DEFAULT_MEMORY = "1G"  # lmplz -S; its own default is 80% of RAM
_HINT = ("KenLM's {name} was not found. Build it with `make kenlm` (part of `make setup`), "
         "or point WINNOW_KENLM_BIN at a folder that holds lmplz, build_binary and interpolate.")


class KenlmNotFound(FileNotFoundError):
    pass


def kenlm_binary(name: str) -> str:
    """Path of ``lmplz``/``build_binary``: $WINNOW_KENLM_BIN, the repo's tools/, or PATH."""
    candidates = []
    if os.environ.get("WINNOW_KENLM_BIN"):
        candidates.append(Path(os.environ["WINNOW_KENLM_BIN"]) / name)
    candidates.append(Path(__file__).resolve().parents[1] / "tools" / "kenlm" / "bin" / name)
    candidates.append(Path.cwd() / "tools" / "kenlm" / "bin" / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise KenlmNotFound(_HINT.format(name=name))


def train_arpa(text_path: str | Path, arpa_path: str | Path, order: int = DEFAULT_ORDER,
               memory: str = DEFAULT_MEMORY, prune: list[int] | None = None,
               intermediate: str | Path | None = None) -> Path:
    """Run ``lmplz`` on normalised text (one sentence per line) and write an ARPA file.

    ``--discount_fallback`` keeps tiny corpora (seed sets of a few hundred lines) from
    failing Kneser-Ney discount estimation.  The ARPA is written to a temp name and
    renamed, so an interrupted run never leaves a truncated model behind.
    ``intermediate`` also writes the model in KenLM's intermediate format under that
    prefix, which ``interpolate`` reads.
    """
    arpa_path = Path(arpa_path)
    arpa_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = arpa_path.with_suffix(arpa_path.suffix + ".tmp")
    with tempfile.TemporaryDirectory(prefix="lmplz-") as tmpdir:
        cmd = [kenlm_binary("lmplz"), "-o", str(order), "-S", memory, "-T", tmpdir,
               "--discount_fallback", "--skip_symbols"]
        if prune:
            cmd += ["--prune", *map(str, prune)]
        if intermediate is not None:
            cmd += ["--intermediate", str(intermediate), "--arpa", "/dev/stdout"]
        with open(text_path, "rb") as fin, open(tmp_out, "wb") as fout:
            # lmplz draws its own progress bar: show it at a terminal, keep it for errors otherwise
            tty = sys.stderr.isatty()
            proc = subprocess.run(cmd, stdin=fin, stdout=fout,
                                  stderr=None if tty else subprocess.PIPE)
    if proc.returncode != 0:
        tmp_out.unlink(missing_ok=True)
        detail = "" if proc.stderr is None else proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"lmplz failed on {text_path} (exit {proc.returncode}):\n{detail}")
    os.replace(tmp_out, arpa_path)
    return arpa_path


def build_binary(arpa_path: str | Path, binary_path: str | Path) -> Path:
    binary_path = Path(binary_path)
    tmp_out = binary_path.with_suffix(binary_path.suffix + ".tmp")
    proc = subprocess.run([kenlm_binary("build_binary"), "-s", str(arpa_path), str(tmp_out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tmp_out.unlink(missing_ok=True)
        detail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"build_binary failed on {arpa_path}:\n{detail}")
    os.replace(tmp_out, binary_path)
    return binary_path


def write_text(sentences: list[str], path: str | Path) -> Path:
    """Normalised sentences, one per line (empty ones left out): what lmplz and interpolate read."""
    from winnow.lm.text import normalize

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (normalize(s) for s in sentences)
    path.write_text("".join(f"{s}\n" for s in lines if s), encoding="utf-8")
    return path


def intermediate_prefix(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.intermediate"


def train_lm(sentences: list[str], out_dir: str | Path, name: str, order: int = DEFAULT_ORDER,
             memory: str = DEFAULT_MEMORY, intermediate: bool = False) -> tuple[Path, Path]:
    """Normalised sentences -> ``name.txt``, ``name.arpa`` and ``name.binary`` in out_dir
    (and, with ``intermediate``, the model in the format ``interpolate`` reads)."""
    out_dir = Path(out_dir)
    txt = write_text(sentences, out_dir / f"{name}.txt")
    arpa = train_arpa(txt, out_dir / f"{name}.arpa", order=order, memory=memory,
                      intermediate=intermediate_prefix(out_dir, name) if intermediate else None)
    binary = build_binary(arpa, out_dir / f"{name}.binary")
    return arpa, binary


def interpolate(models: list[Path], weights: list[float], arpa_path: str | Path,
                memory: str = DEFAULT_MEMORY) -> Path:
    """KenLM's ``interpolate``: the models (intermediate prefixes from ``train_lm(...,
    intermediate=True)``) combined into one ARPA with the given weights.

    KenLM interpolates log-linearly and renormalises (Heafield et al. 2016, "Normalized
    log-linear interpolation of backoff language models is efficient"): p(w | h) is
    proportional to prod_i p_i(w | h) ** weight_i over the models' joint vocabulary.
    """
    arpa_path = Path(arpa_path)
    tmp_out = arpa_path.with_suffix(arpa_path.suffix + ".tmp")
    with tempfile.TemporaryDirectory(prefix="interpolate-") as tmpdir, \
            open(tmp_out, "wb") as fout:
        cmd = [kenlm_binary("interpolate"), "-m", *map(str, models), "-w", *map(str, weights),
               "-S", memory, "-T", f"{tmpdir}/lm"]
        proc = subprocess.run(cmd, stdout=fout, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tmp_out.unlink(missing_ok=True)
        raise RuntimeError(f"interpolate failed on {', '.join(map(str, models))} (exit "
                           f"{proc.returncode}):\n{proc.stderr.decode(errors='replace')[-2000:]}")
    os.replace(tmp_out, arpa_path)
    return arpa_path
