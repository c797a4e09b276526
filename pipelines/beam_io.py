"""Shared Beam pieces: reading records with dead letters, writing JSONL, counters.

Every stage counts with Beam Metrics under namespace ``winnow`` as ``<stage>/read``,
``<stage>/kept``, ``<stage>/dropped`` and ``<stage>/rejected``; ``run_pipeline``
returns them so a stage can check read = kept + dropped + rejected and record it.
"""
from __future__ import annotations

import glob
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from winnow.pipelines import fileio
from winnow.pipelines.config import BeamSettings, InputFile
from winnow.pipelines.readers import read_file, stable_fraction
from winnow.pipelines.records import Decision, Rejected, to_dict, to_json

NAMESPACE = "winnow"
# runner names that winnow resolves to its own classes (Beam's DaskRunner loses data)
RUNNERS = {"DaskRunner": "winnow.pipelines.dask_runner.DaskRunner"}
REJECTED = "rejected"


class Counters:
    """The four counters of a stage (created where used, so DoFns stay picklable)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.read = Metrics.counter(NAMESPACE, f"{stage}/read")
        self.kept = Metrics.counter(NAMESPACE, f"{stage}/kept")
        self.dropped = Metrics.counter(NAMESPACE, f"{stage}/dropped")
        self.rejected = Metrics.counter(NAMESPACE, f"{stage}/rejected")


class _ReadFile(beam.DoFn):
    """One input file -> records, and dead letters on the ``rejected`` output."""

    def __init__(self, stage: str, spec: dict[str, Any]):
        self.stage, self.spec = stage, spec

    def setup(self) -> None:
        self.counters = Counters(self.stage)

    def process(self, path: str) -> Iterable[Any]:
        spec = self.spec
        per_file = Metrics.counter(NAMESPACE, f"{self.stage}/read:{path}")
        n = 0
        for rec in read_file(path, spec["format"], locale=spec.get("locale", "")):
            if isinstance(rec, Rejected):
                self.counters.read.inc()
                per_file.inc()
                self.counters.rejected.inc()
                yield beam.pvalue.TaggedOutput(REJECTED, rec)
                continue
            if spec.get("partition") and getattr(rec, "partition", "") != spec["partition"]:
                continue  # another split of the same file: not part of this input
            if spec.get("sample") and stable_fraction(rec.id, 0) >= spec["sample"]:
                continue  # outside the configured sample: not part of this input
            if spec.get("limit") and n >= spec["limit"]:
                return
            n += 1
            self.counters.read.inc()
            per_file.inc()
            yield rec


class ReadRecords(beam.PTransform):
    """Read input files into records; malformed lines go to ``rejected`` with file/line/reason.

    A file is the unit of parallelism (line numbers stay exact); a Reshuffle after
    reading spreads the records over workers.  Shard very large inputs into files.
    """

    def __init__(self, stage: str, inputs: list[InputFile]):
        super().__init__()
        self.stage = stage
        self.inputs = inputs

    def expand(self, pbegin):
        outputs = []
        for i, inp in enumerate(self.inputs):
            paths = fileio.expand(inp.path)
            res = (pbegin
                   | f"Files{i}" >> beam.Create(paths)
                   | f"Parse{i}" >> beam.ParDo(_ReadFile(self.stage, inp.model_dump()))
                   .with_outputs(REJECTED, main="records"))
            outputs.append(res)
        records = ([o.records for o in outputs] | "MergeRecords" >> beam.Flatten()
                   | "Spread" >> beam.Reshuffle())
        rejected = [o[REJECTED] for o in outputs] | "MergeRejected" >> beam.Flatten()
        return {"records": records, "rejected": rejected}


def decision_json(d: Decision) -> str:
    out = to_dict(d.record)
    out["_decision"] = {"kept": d.kept, "rule": d.rule, "score": d.score, **d.scores}
    return json.dumps(out, ensure_ascii=False, sort_keys=True)


class WriteDecisions(beam.PTransform):
    """Split Decisions into kept/dropped JSONL (each with its rule and score) and count them."""

    def __init__(self, stage: str, out_dir: str):
        super().__init__()
        self.stage, self.out_dir = stage, out_dir

    def expand(self, decisions):
        stage = self.stage

        def count(d: Decision) -> Decision:
            c = Counters(stage)
            (c.kept if d.kept else c.dropped).inc()
            return d

        parts = (decisions | "Count" >> beam.Map(count)
                 | "KeptOrDropped" >> beam.Partition(lambda d, _n: 0 if d.kept else 1, 2))
        parts[0] | "KeptJson" >> beam.Map(decision_json) | "WriteKept" >> write_jsonl(
            self.out_dir, "kept")
        parts[1] | "DroppedJson" >> beam.Map(decision_json) | "WriteDropped" >> write_jsonl(
            self.out_dir, "dropped")
        return parts


def write_jsonl(out_dir: str, name: str) -> beam.PTransform:
    return beam.io.WriteToText(str(Path(out_dir) / name), file_name_suffix=".jsonl",
                               shard_name_template="-SSSSS-of-NNNNN")


def write_rejected(rejected, out_dir: str):
    return (rejected | "RejectedJson" >> beam.Map(to_json)
            | "WriteRejected" >> write_jsonl(out_dir, "rejected"))


def read_jsonl_shards(out_dir: str | Path, name: str) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(glob.glob(str(Path(out_dir) / f"{name}-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def pipeline_options(settings: BeamSettings, extra: list[str] = ()) -> PipelineOptions:
    """Runner and options from the config, then the command line's pass-through flags."""
    runner = RUNNERS.get(settings.runner, settings.runner)
    args = [f"--runner={runner}", *settings.options, *extra]
    return PipelineOptions(args, save_main_session=False)


def run_pipeline(build: Callable[[beam.Pipeline], None], options: PipelineOptions) -> dict[str, int]:
    """Build, run and wait; return the ``winnow`` counters as {name: value}."""
    p = beam.Pipeline(options=options)
    build(p)
    result = p.run()
    result.wait_until_finish()
    counts: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(value or 0)
    return counts


def source_file(record: dict[str, Any]) -> str:
    """The input file of a written record (``source`` is ``path:line``) or dead letter."""
    return record["file"] if "file" in record else record["source"].rsplit(":", 1)[0]


def check_accounting_by_file(stage: str, counts: dict[str, int], kept: list[dict[str, Any]],
                             dropped: list[dict[str, Any]], rejected: list[dict[str, Any]]
                             ) -> dict[str, dict[str, int]]:
    """read = kept + dropped + rejected for every input file: per-file ``read`` counters
    against the records written for that file.  Fails loudly where a file lost records."""
    prefix = f"{stage}/read:"
    out = {path: {"read": n, "kept": 0, "dropped": 0, "rejected": 0}
           for path, n in ((k[len(prefix):], v) for k, v in counts.items() if k.startswith(prefix))}
    for name, rows in (("kept", kept), ("dropped", dropped), ("rejected", rejected)):
        for r in rows:
            out.setdefault(source_file(r), {"read": 0, "kept": 0, "dropped": 0, "rejected": 0})[name] += 1
    for path, c in out.items():
        if c["read"] != c["kept"] + c["dropped"] + c["rejected"]:
            raise RuntimeError(f"stage {stage}: {path}: read {c['read']} != kept {c['kept']} + "
                               f"dropped {c['dropped']} + rejected {c['rejected']}: records were lost")
    return out


def check_accounting(stage: str, counts: dict[str, int]) -> dict[str, int]:
    """read = kept + dropped + rejected, or fail loudly: a pipeline never loses records."""
    get = lambda k: counts.get(f"{stage}/{k}", 0)  # noqa: E731
    read, kept, dropped, rejected = get("read"), get("kept"), get("dropped"), get("rejected")
    if read != kept + dropped + rejected:
        raise RuntimeError(f"stage {stage}: read {read} != kept {kept} + dropped {dropped} + "
                           f"rejected {rejected}: records were lost")
    return {"read": read, "kept": kept, "dropped": dropped, "rejected": rejected}
