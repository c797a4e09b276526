"""Pipeline config files: YAML, validated on load, one file = one reproducible run.

Errors name the file, the key and what is wrong (``ConfigError``); the CLI prints
them without a traceback and exits 2.  ``--set a.b=value`` overrides are applied
before validation, so an override is checked like the file itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from winnow.pipelines import fileio
from winnow.pipelines.readers import FORMATS
from winnow.selectors.embeddings import INT8_SUFFIX


class ConfigError(ValueError):
    pass


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputFile(Strict):
    path: str
    format: Literal[FORMATS]  # type: ignore[valid-type]
    partition: str | None = Field(None, description="keep only records of this partition")
    locale: str = ""
    limit: int | None = Field(None, ge=1, description="read at most this many records")
    sample: float | None = Field(None, gt=0.0, le=1.0, description="read a deterministic "
                                 "id-hash sample of this fraction of the records")


class BeamSettings(Strict):
    runner: str = "DirectRunner"
    options: list[str] = Field(default_factory=list,
                               description="extra Beam pipeline options, e.g. --direct_num_workers=2")


class EvalSettings(Strict):
    test_path: str
    test_format: Literal[FORMATS] = "massive"  # type: ignore[valid-type]
    locale: str = ""


class RelevanceSettings(Strict):
    top_k: int | None = Field(400, ge=1, description="keep the k most relevant per new intent")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="or keep score >= this")
    c: float = Field(4.0, gt=0)
    negatives_per_intent: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _one_rule(self) -> "RelevanceSettings":
        if (self.top_k is None) == (self.threshold is None):
            raise ValueError("set exactly one of relevance.top_k and relevance.threshold")
        return self


class SelfTrainingSettings(Strict):
    iterations: int = Field(3, ge=0)
    confidence: float = Field(0.3, ge=0.0, le=1.0,
                              description="keep a self-label at or above this probability")


class IntentModelSettings(Strict):
    embedding_model: str = "minilm"
    c: float = Field(10.0, gt=0)
    class_weight: float = Field(0.0, ge=0.0, le=1.0, description="weigh each utterance by "
                                "(1 / its intent's count) ** class_weight: 0 plain, 1 balanced")
    min_df: int = Field(1, ge=1, description="tf-idf n-grams in fewer training utterances are "
                        "left out; 2 keeps a third of them and fits ~1.7x faster "
                        "(docs/intent-evaluation.md)")


class ParaphraseSettings(Strict):
    pairs: int = Field(20000, ge=10)
    positive_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    held_out_intents: int = Field(8, ge=1, description="existing intents the paraphrase "
                                  "encoder and detector never train on: their pairs test it "
                                  "on unseen intents")
    embedding_model: str = Field("minilm", description="sentence-transformers model the "
                                 "detector reads; fine-tuned on the pairs and saved with the run")
    fine_tune_epochs: int = Field(1, ge=0, description="0: keep the encoder frozen")

    @field_validator("embedding_model")
    @classmethod
    def _trainable(cls, ref: str) -> str:
        if ref.endswith(INT8_SUFFIX):
            raise ValueError(f"'{ref}' is an int8 ONNX export; the paraphrase encoder is "
                             "trained and saved with the run, so name the fp32 model")
        return ref


class DiversitySettings(Strict):
    objective: Literal["novelty", "coverage", "in_domain"] = Field(
        "novelty", description="novelty: the paper's worst-paraphrase-first order; coverage: "
        "the candidate that paraphrases most of the candidates the grown set does not yet "
        "(facility location over the detector, selectors/diversity.py); in_domain: the "
        "domain classifier's probability alone, most in-register first (needs "
        "in_domain_weighting)")
    batch_size: int = Field(10, ge=1)
    rounds: int = Field(20, ge=1)
    confident_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="pick from the most confidently self-labelled "
        "fraction of an intent's candidates first (1.0: all candidates alike)")
    in_domain_weighting: bool = Field(
        True, description="multiply each candidate's novelty by the probability that a "
        "domain classifier (annotated data against the selected pool) gives it of looking "
        "like the annotated data (false: the paper's plain worst-paraphrase-first order)")

    @model_validator(mode="after")
    def _in_domain_needs_its_weights(self) -> "DiversitySettings":
        if self.objective == "in_domain" and not self.in_domain_weighting:
            raise ValueError("diversity.objective: in_domain ranks by the domain classifier's "
                             "probability, which diversity.in_domain_weighting: false turns off")
        return self


class IntentConfig(Strict):
    workflow: Literal["intent"]
    name: str = "intent"
    output_dir: str
    seed: int = 13
    beam: BeamSettings = Field(default_factory=BeamSettings)
    annotated: list[InputFile]
    pool: list[InputFile]
    new_intents: list[str] = Field(min_length=1)
    seeds_per_intent: int = Field(10, ge=1)
    relevance: RelevanceSettings = Field(default_factory=RelevanceSettings)
    self_training: SelfTrainingSettings = Field(default_factory=SelfTrainingSettings)
    intent_model: IntentModelSettings = Field(default_factory=IntentModelSettings)
    paraphrase: ParaphraseSettings = Field(default_factory=ParaphraseSettings)
    diversity: DiversitySettings = Field(default_factory=DiversitySettings)
    curve_points: list[int] = Field(default_factory=lambda: [25, 50, 100, 200, 400])
    curve_shares: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.25, 0.4], description="shares of the full budget at which "
        "the curves measure too (the per-intent size that adds at most that share, "
        "intent_candidates.share_points), so that a data fraction at a bar is read at the bar "
        "and not at the next of curve_points (the targets: the full-budget error with 25% and with "
        "40% of the data)")
    curve_workers: int = Field(0, ge=0, description="processes that fit the curves' intent "
                               "models side by side (each fit is independent, so the curves "
                               "are the same for any number); 0 = one per CPU core")
    eval: EvalSettings | None = None


class BitextFilterSettings(Strict):
    model: str = "e5-small"
    max_distance: float | None = Field(None, gt=0.0, le=2.0,
                                       description="keep pairs within this cosine distance")
    keep_nearest: int | None = Field(None, ge=1, description="or keep the N nearest pairs")
    shortlist: int | None = Field(
        None, ge=1, description="embed only the N pairs whose target side is most in-domain by "
        "the Moore-Lewis cross-entropy difference (seed LM against a general LM); null: "
        "embed every pair that passes the rules (the paper's embedding-only filter)")
    general_lm_sentences: int = Field(
        20000, ge=10, description="target sides sampled (by id hash) from the bitext for "
        "the general LM of the Moore-Lewis ranker")
    min_tokens: int = Field(2, ge=1)
    max_tokens: int = Field(40, ge=1)
    max_length_ratio: float = Field(2.5, gt=1.0)
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _one_rule(self) -> "BitextFilterSettings":
        if (self.max_distance is None) == (self.keep_nearest is None):
            raise ValueError("set exactly one of bitext_filter.max_distance and "
                             "bitext_filter.keep_nearest")
        if self.min_tokens > self.max_tokens:
            raise ValueError("bitext_filter.min_tokens is larger than max_tokens")
        if self.shortlist is not None and self.keep_nearest is not None \
                and self.shortlist < self.keep_nearest:
            raise ValueError("bitext_filter.shortlist is smaller than keep_nearest")
        return self


class NmtConfig(Strict):
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)
    embed_dim: int = Field(256, ge=16)
    ffn_dim: int = Field(512, ge=16)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0)
    warmup_updates: int = Field(200, ge=0)
    max_tokens: int = Field(4096, ge=64)
    max_updates: int = Field(2000, ge=1)
    max_minutes: float = Field(20.0, gt=0)
    finetune_updates: int = Field(500, ge=1)
    beam: int = Field(5, ge=1)
    nbest: int = Field(5, ge=1)
    lenpen: float = Field(1.5, gt=0, description="fairseq's length penalty: the beam ranks a "
                          "hypothesis by its log-prob / length ** lenpen, so above 1 it favours "
                          "longer ones; en-de: the ensemble's translations were 8% shorter than "
                          "the references at 1.0, and 1.5-3.0 all gave +0.9-1.0 chrF on both "
                          "halves of the tuning pairs (docs/lm-evaluation.md)")
    vocab_size: int = Field(4000, ge=64)
    normalize: bool = Field(True, description="train and translate on text normalised like "
                            "the LM's (lower-cased, no punctuation), the style of spoken seeds")
    threads: int = Field(1, ge=1, description="torch threads per fairseq process "
                         "(OMP_NUM_THREADS); 1 is fastest for small models on shared cores")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="bf16: each training step runs under CPU bfloat16 autocast "
        "(float32 weights, optimizer state and loss; validation and beam search stay float32). "
        "On CPUs with AMX or AVX512-BF16 a step takes ~0.7x the time; on others it is slower. "
        "auto: bf16 where this CPU has those units, else fp32, resolved when the config loads "
        "(the stage keys and each base's stats name the precision that ran)")
    lr_schedule: Literal["inverse_sqrt", "linear"] = Field(
        "inverse_sqrt", description="the base translators' learning rate after the warm-up: "
        "inverse square root, or linear decay to 0 at max_updates (fine-tunes keep inverse "
        "square root). en-de at 2,000 linear updates lost to 2,400 inverse-sqrt ones (chrF "
        "49.6 against 51.8; docs/lm-evaluation.md, stop 49)")
    ensemble: int = Field(1, ge=1, description="independently trained translators in the "
                          "`all` row: member k has its own base (trained with seed + k - 1) "
                          "and fine-tunes; their translations are pooled (two seeds of one "
                          "base agree on 1 source in 3, and the LM of both beats each; "
                          "docs/lm-evaluation.md)")
    parallel: int = Field(2, ge=1, description="translators trained or decoding at the same "
                          "time (independent chains: unfiltered and filtered), and LMs the tune "
                          "stage builds at once; parallel x threads should not exceed the cores")

    @model_validator(mode="after")
    def _dims(self) -> "NmtConfig":
        if self.embed_dim % self.heads:
            raise ValueError("nmt.embed_dim must be divisible by nmt.heads")
        if self.nbest > self.beam:
            raise ValueError("nmt.nbest cannot exceed nmt.beam")
        if self.precision == "auto":
            from winnow.translate.fairseq_nmt import bf16_units

            self.precision = "bf16" if bf16_units() else "fp32"
        return self


class LmSelfTrainingSettings(Strict):
    subset: int = Field(2000, ge=1, description="in-domain source utterances to translate")
    patience: int = Field(1, ge=0, description="stop the fine-tune after this many validations "
                          "in a row that do not beat the best so far, the parent included "
                          "(fairseq --patience, counted from the parent's loss; 0: all "
                          "finetune_updates). "
                          "en-de: the tuning loss was lowest at the first validation and rose "
                          "at every later one in all four chains (docs/lm-evaluation.md)")


class SeedParallelSettings(Strict):
    """Fine-tuning on the seed's own parallel pairs (where ``parallel_dev`` gives the
    seed utterances' sources, or back-translated ones): never the tuning split's nor the
    evaluation file's."""

    enabled: bool = True
    updates: int = Field(100, ge=1, description="fine-tuning updates on the seed pairs (a few "
                         "hundred pairs over-fit fast: 300 updates were best at the first "
                         "checkpoint, 75, on the en-de tuning split)")
    average_last: int = Field(2, ge=1, description="the fine-tuned translator is the parameter "
                              "mean of its last this many saved checkpoints (1: the one with the "
                              "lowest tuning loss); en-de: the mean of the last two translated "
                              "the tuning pairs about 1 chrF better than the lowest-loss one")


class BackTranslationSettings(Strict):
    """Without ``parallel_dev`` the seed has no sources: its sentences (and the tuning
    split's) are back-translated by a translator trained target -> source on the filtered
    bitext (Sennrich et al. 2016), so that the seed-parallel fine-tune still learns the
    in-domain target side, and the tuning pairs still validate it."""

    enabled: bool = True


class RescoringSettings(Strict):
    lm_weight: float | None = Field(None, ge=0.0, description="fixed λ; null = tune on the tuning split")
    grid: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])


class LmFilterSettings(Strict):
    """Translations scoring below a percentile of the tuning split's per-token scores under
    the seed LM are dropped: held-out in-domain text the LM never saw."""

    percentile: float | None = Field(None, ge=0.0, le=100.0,
                                     description="fixed percentile; null = the grid value "
                                                 "with the lowest tuning perplexity")
    grid: list[float] = Field(default_factory=lambda: [0.0, 10.0, 20.0, 30.0, 40.0])


class GeneralTextSettings(Strict):
    """Target sides of the general bitext added to the translations of the `all` and
    `general_text` rows for the words the translations lack (``lm.general_text``): the
    ``in_domain`` top of the bitext filter's Moore-Lewis ranking, then ``new_words`` further
    sentences that each bring a word the text lacks; the pair is tuned on the tuning split."""

    enabled: bool = False
    in_domain: list[int] = Field(default_factory=lambda: [0, 5000, 10000],
                                 description="grid: sentences from the top of the ranking")
    new_words: list[int] = Field(default_factory=lambda: [0, 2500, 5000, 10000],
                                 description="grid: further sentences, each bringing a word "
                                 "the text lacks")
    oov_goal: float | None = Field(
        0.5, gt=0.0, description="the chosen pair has the lowest tuning perplexity among those "
        "whose tuning OOV rate is at most this fraction of the seed LM's (where none is, of "
        "all); null: the lowest tuning perplexity")

    @field_validator("in_domain", "new_words")
    @classmethod
    def _counts(cls, v: list[int]) -> list[int]:
        if not v or any(n < 0 for n in v):
            raise ValueError("must be a non-empty list of sentence counts >= 0")
        return sorted(set(v))


class FinalLmSettings(Strict):
    order: int = Field(3, ge=1, le=6)
    memory: str = "1G"
    # a word of the added text outside the seed's vocabulary stays a word of the LM only
    # when the text has it this often; rarer ones become one token (lm.combine says why)
    new_word_min_count: int = Field(1, ge=1)


class LmConfig(Strict):
    workflow: Literal["lm"]
    name: str = "lm"
    output_dir: str
    seed: int = 13
    beam: BeamSettings = Field(default_factory=BeamSettings)
    src_lang: str
    tgt_lang: str
    target_seed: InputFile
    tuning_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    source_in_domain: InputFile
    bitext: list[InputFile] = Field(min_length=1, description="general bitext files (each with "
                                    "its own format and optional sample); the filter chooses "
                                    "among all of them")
    parallel_dev: InputFile | None = Field(None, description="source-language file parallel to "
                                           "target_seed by id, for chrF/BLEU on the tuning split")
    bitext_filter: BitextFilterSettings = Field(
        default_factory=lambda: BitextFilterSettings(keep_nearest=20000))
    nmt: NmtConfig = Field(default_factory=NmtConfig)
    self_training: LmSelfTrainingSettings = Field(default_factory=LmSelfTrainingSettings)
    seed_parallel: SeedParallelSettings = Field(default_factory=SeedParallelSettings)
    back_translation: BackTranslationSettings = Field(default_factory=BackTranslationSettings)
    rescoring: RescoringSettings = Field(default_factory=RescoringSettings)
    lm_filter: LmFilterSettings = Field(default_factory=LmFilterSettings)
    general_text: GeneralTextSettings = Field(default_factory=GeneralTextSettings)
    final_lm: FinalLmSettings = Field(default_factory=FinalLmSettings)
    ablation: bool = Field(True, description="build every ablation row, not only seed_only and all")
    eval: EvalSettings | None = None

    @model_validator(mode="after")
    def _general_text_needs_ranking(self) -> "LmConfig":
        if self.general_text.enabled and self.bitext_filter.shortlist is None:
            raise ValueError("general_text.enabled needs the Moore-Lewis ranking: set "
                             "bitext_filter.shortlist")
        return self

    @field_validator("bitext", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v


Config = IntentConfig | LmConfig


def _set_key(d: dict[str, Any], dotted: str, raw: str, origin: str) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: --set {dotted}: '{k}' is not a section")
        cur = nxt
    cur[keys[-1]] = yaml.safe_load(raw)


def _format_error(path: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{path}: {key or '(top level)'}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: list[str] = (), check_files: bool = True) -> Config:
    """Read, override, validate.  Relative data paths resolve against the config's folder
    first, then the working directory, so a config works from the repo root or elsewhere."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{path}: --set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set_key(data, key.strip(), raw, str(path))
    workflow = data.get("workflow")
    model = {"intent": IntentConfig, "lm": LmConfig}.get(workflow)
    if model is None:
        raise ConfigError(f"{path}: workflow: must be 'intent' or 'lm' (got {workflow!r})")
    try:
        cfg = model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(str(path), err)) from None
    cfg.output_dir = expand_env(cfg.output_dir)  # ${WINNOW_RUNS:-runs}/name: a bucket or a folder
    if check_files:
        _check_paths(cfg, path)
    return cfg


_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_env(p: str) -> str:
    """``${WINNOW_DATA:-../shared/datasets}/massive``: data locations come from the environment."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), p)


def _resolve(p: str, config_path: Path) -> str:
    p = expand_env(p)
    if not fileio.is_local(p):
        return p
    cand = (config_path.parent / p)
    if not Path(p).is_absolute() and cand.exists():
        return str(cand.resolve())
    return p


def _not_found(config_path: Path, key: str, p: str) -> ConfigError:
    where = "" if Path(p).is_absolute() or not fileio.is_local(p) else (
        f" (relative paths are looked up in {config_path.parent.resolve()} and then in the "
        f"working directory {Path.cwd()}; set WINNOW_DATA or give an absolute path)")
    return ConfigError(f"{config_path}: {key}: file not found: {p}{where}")


def _check_exists(config_path: Path, key: str, p: str) -> None:
    """A local path is looked up on disk; a remote one (gs://, s3://) is matched in its
    object store, where a missing bucket or no access says so."""
    try:
        found = bool(fileio.match(p)) or (fileio.is_local(p) and Path(p).exists())
    except fileio.StorageError as err:
        raise ConfigError(f"{config_path}: {key}: {err}") from None
    if not found:
        raise _not_found(config_path, key, p)


def _check_paths(cfg: Config, config_path: Path) -> None:
    for key, inp in _input_files(cfg):
        inp.path = _resolve(inp.path, config_path)
        _check_exists(config_path, f"{key}.path", inp.path)
    if cfg.eval is not None:
        cfg.eval.test_path = _resolve(cfg.eval.test_path, config_path)
        _check_exists(config_path, "eval.test_path", cfg.eval.test_path)


def _input_files(cfg: Config) -> list[tuple[str, InputFile]]:
    if isinstance(cfg, IntentConfig):
        return ([(f"annotated.{i}", f) for i, f in enumerate(cfg.annotated)]
                + [(f"pool.{i}", f) for i, f in enumerate(cfg.pool)])
    out = [("target_seed", cfg.target_seed), ("source_in_domain", cfg.source_in_domain)]
    out += [(f"bitext.{i}", f) for i, f in enumerate(cfg.bitext)]
    if cfg.parallel_dev is not None:
        out.append(("parallel_dev", cfg.parallel_dev))
    return out


def section_hash(*parts: Any) -> str:
    """Stable hash of config sections (and upstream hashes) for stage completion records."""
    blob = json.dumps([p.model_dump() if isinstance(p, BaseModel) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
