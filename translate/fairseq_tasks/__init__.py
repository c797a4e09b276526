"""fairseq tasks of winnow's own, loaded by fairseq's ``--user-dir`` (``fairseq_nmt.USER_DIR``).

``translation_bf16`` is fairseq's translation task with each training step under CPU
bfloat16 autocast (``nmt.precision: bf16``). fairseq's own ``--bf16`` implies a TPU and
casts the weights; autocast keeps the weights, the Adam state and the loss in float32 and runs
the matrix products in bfloat16, which CPUs with AMX or AVX512-BF16 execute several times
faster than float32. Validation and beam search stay float32, so the keep-the-parent checks
and the n-best scores are computed as before.

A fine-tune's ``--patience`` starts from its parent's validation loss
(``fairseq_nmt.PATIENCE_FROM_ENV``): fairseq counts patience from the first validation of
the run, but a fine-tune's update 0 is the parent, which it keeps where no update beats it.
"""
import os
import sys

import torch
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from winnow.translate.fairseq_nmt import BF16_TASK, PATIENCE_FROM_ENV


def _patience_from_parent() -> None:
    """Seed fairseq's early-stopping state with the parent's loss.  fairseq keeps that state
    on its ``should_stop_early`` function (``.best``, ``.num_runs``) in the running
    ``fairseq_cli.train``, which is ``__main__`` when it runs as a script; this module is
    imported while that script parses its arguments, before the first validation."""
    loss = os.environ.get(PATIENCE_FROM_ENV)
    if loss is None:
        return
    stop = getattr(sys.modules.get("__main__"), "should_stop_early", None)
    if stop is None:
        raise RuntimeError(f"{PATIENCE_FROM_ENV} is set, but the running script has no "
                           "fairseq_cli.train.should_stop_early to start patience from")
    stop.best, stop.num_runs = float(loss), 0


_patience_from_parent()


@register_task(BF16_TASK, dataclass=TranslationConfig)
class BFloat16TranslationTask(TranslationTask):
    """The translation task; forward and backward of a training step in bfloat16 autocast."""

    def train_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().train_step(*args, **kwargs)
