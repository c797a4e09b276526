"""fairseq tasks of winnow's own, loaded by fairseq's ``--user-dir`` (``fairseq_nmt.USER_DIR``).

``translation_bf16`` is fairseq's translation task with each training step under CPU
bfloat16 autocast (``nmt.precision: bf16``). fairseq's own ``--bf16`` implies a TPU and
casts the weights; autocast keeps the weights, the Adam state and the loss in float32 and runs
the matrix products in bfloat16, which CPUs with AMX or AVX512-BF16 execute several times
faster than float32. Validation and beam search stay float32, so the keep-the-parent checks
and the n-best scores are computed as before.
"""
import torch
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from winnow.translate.fairseq_nmt import BF16_TASK


@register_task(BF16_TASK, dataclass=TranslationConfig)
class BFloat16TranslationTask(TranslationTask):
    """The translation task; forward and backward of a training step in bfloat16 autocast."""

    def train_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().train_step(*args, **kwargs)
