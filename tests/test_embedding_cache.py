"""The embedding cache gives a redone stage exactly the vectors a fresh run's stage gets."""
import numpy as np

from winnow.pipelines.data_access import EmbeddingCache

X = [f"set an alarm for {n} am" for n in ("six", "seven", "eight")]
Y = [f"what is the weather in {c} tomorrow" for c in ("paris", "rome", "berlin", "oslo")] + X[:1]


def _fresh(path, stages):
    cache = EmbeddingCache("minilm", path)
    out = []
    for i, texts in enumerate(stages):
        cache.begin(i)
        out.append(cache.get(texts))
    cache.save()
    return cache, out


def test_a_redone_stage_embeds_as_in_a_fresh_run(tmp_path):
    first, _ = _fresh(tmp_path / "run.npz", [X, Y])
    assert first.encoded == len(set(X + Y))

    # stage 0 redone with other texts (a changed setting), some of which stage 1 embedded
    # in the first run: it takes none of stage 1's vectors, nor its own earlier ones
    x2 = X + Y[:2]
    redo = EmbeddingCache("minilm", tmp_path / "run.npz")
    redo.begin(0)
    got0 = redo.get(x2)
    assert redo.encoded == len(x2)
    redo.begin(1)
    got1 = redo.get(Y)
    assert redo.encoded == len(x2) + len(set(Y) - set(x2))

    _, (want0, want1) = _fresh(tmp_path / "fresh.npz", [x2, Y])
    assert np.array_equal(got0, want0) and np.array_equal(got1, want1)

    # outside a stage every stored vector serves (the LM filter's seed embeddings)
    redo.save()
    plain = EmbeddingCache("minilm", tmp_path / "run.npz")
    assert np.array_equal(plain.get(Y), want1) and plain.encoded == 0


def test_vectors_of_unknown_stage_serve_no_stage(tmp_path):
    cache = EmbeddingCache("minilm", tmp_path / "run.npz")
    vecs = cache.get(X)
    np.savez(tmp_path / "old.npz", texts=np.array(X), vecs=vecs)  # a cache without ranks
    old = EmbeddingCache("minilm", tmp_path / "old.npz")
    old.begin(3)
    old.get(X)
    assert old.encoded == len(X)
