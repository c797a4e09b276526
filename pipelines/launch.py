"""The ``winnow`` console command: it caps how long idle BLAS and OpenMP threads spin, then
runs ``cli.main``.

Why: the intent run works on two cores with more threads than cores.  The paraphrase
encoder fine-tunes on two torch (OpenMP) threads beside single-threaded intent-model and CRF
fits, and scikit-learn's and scipy's thread pools wait beside them.  A waiting thread spins
by default (libgomp: 300,000 turns; OpenBLAS: about 2^28 cycles) and burns the core that the
thread it waits for needs.  Measured on 2 cores (stop 52): with two busy processes beside
it, a fine-tune batch took 4.3 s at the defaults and 1.8 s at these; with one busy process
beside it, the intent model's fit took 22 s and 12 s; alone, both run as fast as before.
Only the scheduling changes: the fine-tuned weights and the fitted coefficients are
bit-identical.  Each runtime reads its setting once, when it loads, so this module imports
nothing heavy and sets them before ``cli`` loads numpy.  A value the user set wins.
"""
from __future__ import annotations

import os

SPIN_LIMITS = {
    "GOMP_SPINCOUNT": "10000",  # libgomp (torch, scikit-learn): turns before a waiting thread sleeps
    "OPENBLAS_THREAD_TIMEOUT": "4",  # OpenBLAS (numpy, scipy): spin 2^4 cycles, the least it allows
}


def main() -> int:
    for name, value in SPIN_LIMITS.items():
        os.environ.setdefault(name, value)
    from winnow.pipelines.cli import main as cli_main
    return cli_main()
