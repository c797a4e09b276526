"""Joint sentencepiece subword model for the NMT source and target text."""
from __future__ import annotations

import io
from pathlib import Path

DEFAULT_VOCAB_SIZE = 4000


class Subword:
    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        self.model_path = str(model_path)
        self._sp = spm.SentencePieceProcessor(model_file=self.model_path)

    @classmethod
    def train(cls, sentences: list[str], model_prefix: str | Path,
              vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0) -> "Subword":
        """Train a unigram model; the vocabulary shrinks to fit small corpora."""
        import sentencepiece as spm

        model_prefix = Path(model_prefix)
        model_prefix.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(s for s in sentences if s.strip())
        size = vocab_size
        while True:
            try:
                proto = io.BytesIO()
                spm.SentencePieceTrainer.train(
                    sentence_iterator=iter(text.split("\n")), model_writer=proto,
                    vocab_size=size, model_type="unigram", character_coverage=1.0,
                    input_sentence_size=0, shuffle_input_sentence=False,
                    minloglevel=2, hard_vocab_limit=False, num_threads=2)
                break
            except RuntimeError as err:  # vocabulary larger than the corpus supports
                if "Vocabulary size" not in str(err) or size <= 64:
                    raise
                size //= 2
        path = model_prefix.with_suffix(".model")
        path.write_bytes(proto.getvalue())
        return cls(path)

    def encode(self, text: str) -> str:
        return " ".join(self._sp.encode(text, out_type=str))

    def decode(self, pieces: str) -> str:
        return self._sp.decode(pieces.split())
