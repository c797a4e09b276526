"""Shared Beam pieces: reading records with dead letters, writing JSONL, counters.

Every stage counts with Beam Metrics under namespace ``winnow`` as ``<stage>/read``,
``<stage>/kept``, ``<stage>/dropped`` and ``<stage>/rejected``; ``run_pipeline``
returns them so a stage can check read = kept + dropped + rejected and record it.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from winnow.pipelines import fileio
from winnow.pipelines.config import BeamSettings, InputFile
from winnow.pipelines.readers import count_lines, read_file, stable_fraction
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


SPLIT_BYTES = 64 << 20  # a line-format file larger than this is read by byte ranges


def byte_ranges(path: str, size: int, split_bytes: int) -> list[tuple[str, int, int]]:
    """[start, end) ranges of ``split_bytes`` tiling a file of ``size`` bytes (one for an
    empty file)."""
    return [(path, s, min(s + split_bytes, size)) for s in range(0, size, split_bytes)] or \
        [(path, 0, 0)]


def first_lines(counts: list[tuple[tuple[str, int, int], int]]) -> dict[tuple[str, int], int]:
    """{(path, start): the file's line number of the range's first line}, from how many
    lines begin in each range (a prefix sum over each file's ranges)."""
    out, line = {}, {}
    for (path, start, _end), n in sorted(counts):
        out[(path, start)] = line.get(path, 1)
        line[path] = out[(path, start)] + n
    return out


class _ReadRange(beam.DoFn):
    """One byte range of an input file (or the whole file) -> records, and dead letters on
    the ``rejected`` output, each with its file's exact line number."""

    def __init__(self, stage: str, spec: dict[str, Any]):
        self.stage, self.spec = stage, spec

    def setup(self) -> None:
        self.counters = Counters(self.stage)

    def process(self, unit: tuple[str, int, int | None], firsts: dict[tuple[str, int], int]
                ) -> Iterable[Any]:
        spec = self.spec
        path, start, end = unit
        per_file = Metrics.counter(NAMESPACE, f"{self.stage}/read:{path}")
        where = {} if end is None else {"start": start, "end": end,
                                        "first_line": firsts[(path, start)]}
        n = 0
        for rec in read_file(path, spec["format"], locale=spec.get("locale", ""), **where):
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

    A line-format file is read in byte ranges of ``split_bytes``, spread over the workers,
    so one large file is not one worker's job; line numbers stay exact: a first pass counts
    the lines that begin in each range but the last of its file (a small file is read
    once), and each range numbers its lines from the prefix sum.  A SNIPS JSON document,
    or an input with a ``limit`` (the first n records), is read whole.  A Reshuffle after
    reading spreads the records over workers.
    """

    def __init__(self, stage: str, inputs: list[InputFile], split_bytes: int = SPLIT_BYTES):
        super().__init__()
        self.stage = stage
        self.inputs = inputs
        self.split_bytes = split_bytes

    def expand(self, pbegin):
        outputs = []
        for i, inp in enumerate(self.inputs):
            found = fileio.match_sizes(inp.path)  # one listing gives the paths and sizes
            paths = sorted(found) or [inp.path]  # a missing file: its reader says so
            whole = inp.format == "snips" or inp.limit is not None or not found
            units = ([(p, 0, None) for p in paths] if whole else
                     [r for p in paths for r in byte_ranges(p, found[p], self.split_bytes)])
            last = {p: max(r[1] for r in units if r[0] == p) for p in paths}
            ranges = pbegin | f"Files{i}" >> beam.Create(units)
            firsts = (ranges
                      | f"CountLines{i}" >> beam.Map(
                          lambda r, last=last: (r, 0 if r[2] is None or r[1] == last[r[0]]
                                                else count_lines(*r)))
                      | f"AllCounts{i}" >> beam.combiners.ToList()
                      | f"FirstLines{i}" >> beam.Map(first_lines))
            res = (ranges
                   | f"SpreadRanges{i}" >> beam.Reshuffle()
                   | f"Parse{i}" >> beam.ParDo(_ReadRange(self.stage, inp.model_dump()),
                                               beam.pvalue.AsSingleton(firsts))
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
    """Shards ``<out_dir>/<name>-SSSSS-of-NNNNN.jsonl``; none for an empty collection
    (Beam's S3 writer cannot create an empty object), which readers take as no records."""
    return beam.io.WriteToText(fileio.join(out_dir, name), file_name_suffix=".jsonl",
                               shard_name_template="-SSSSS-of-NNNNN", skip_if_empty=True)


def write_rejected(rejected, out_dir: str):
    return (rejected | "RejectedJson" >> beam.Map(to_json)
            | "WriteRejected" >> write_jsonl(out_dir, "rejected"))


def iter_jsonl_shards(out_dir: str | Path, name: str) -> Iterator[dict[str, Any]]:
    """Every record of the ``name`` shards in a folder or bucket prefix, one at a time (a
    stage's 800k dropped pairs need not be held whole); none where a stage wrote none (an
    empty collection writes no shard)."""
    for path in fileio.match(fileio.join(str(out_dir), f"{name}-*.jsonl")):
        with fileio.open_read(path) as f:
            for line in io.TextIOWrapper(f, encoding="utf-8"):
                if line.strip():
                    yield json.loads(line)


def read_jsonl_shards(out_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """``iter_jsonl_shards`` as a list."""
    return list(iter_jsonl_shards(out_dir, name))


def pipeline_options(settings: BeamSettings, extra: list[str] = ()) -> PipelineOptions:
    """Runner and options from the config, then the command line's pass-through flags."""
    runner = RUNNERS.get(settings.runner, settings.runner)
    args = [f"--runner={runner}", *settings.options, *extra]
    return PipelineOptions(args, save_main_session=False)


class DryRun(Exception):
    """``--dry_run``: a Beam stage's job graph was built and checked, and nothing ran; the
    run stops there (the stage stays unfinished)."""


def run_pipeline(build: Callable[[beam.Pipeline], None], options: PipelineOptions) -> dict[str, int]:
    """Build, run and wait; return the ``winnow`` counters as {name: value}.

    With ``--dry_run`` the pipeline is built and not run: the DataflowRunner translates it
    into its job (Dataflow's overrides, environment and option checks) and returns without
    submitting; other runners check the portable graph.  Either way ``DryRun`` says what
    was built."""
    p = beam.Pipeline(options=options)
    build(p)
    if options.view_as(TestOptions).dry_run:
        if "DataflowRunner" in str(options.view_as(StandardOptions).runner):
            job = p.run().job
            graph, name = job.proto_pipeline, f"Dataflow job {job.proto.name}"
        else:
            graph, name = p.to_runner_api(), "pipeline"
        steps = sorted(t.unique_name for t in graph.components.transforms.values()
                       if "/" not in t.unique_name and t.subtransforms
                       and not t.unique_name.startswith("ref_"))
        raise DryRun(f"{name}: built, not submitted ({len(graph.components.transforms)} "
                     f"transforms; steps {', '.join(steps)})")
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
