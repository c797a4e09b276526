"""A DaskRunner that runs winnow's pipelines correctly on a Dask cluster.

Beam 2.77's ``DaskRunner`` is a proof of concept that loses data (silently, or by
failing) in six ways, each of which breaks a winnow pipeline (all seen on a real
local cluster):

1. **Tagged outputs are not separated**: every consumer of a multi-output ParDo
   (``with_outputs``, ``beam.Partition``) receives *all* of its outputs, so the kept
   file would also hold the dropped records.
2. **finish_bundle outputs are dropped**: a partition's results are collected before
   ``finish_bundle`` runs, so ``BatchElements`` loses its last batch and
   ``WriteToText`` never finalises its files.
3. **Only the last transform is computed**: a pipeline with several sinks runs just
   one of them.
4. **GroupByKey strips windows** that the GroupAlsoByWindow step after it needs, so
   any non-empty grouping (CombinePerKey, WriteToText's finalisation) fails.
5. **Bounded reads (ReadFromText) have no translation** and yield nothing.
6. **No metrics**: ``result.metrics()`` raises, so stages could not check
   read = kept + dropped + rejected.

This runner keeps Beam's Create and Flatten translations and replaces the rest: a
bounded source is split and read on the workers; a ParDo runs a whole Dask partition as
one bundle (setup, start, process, finish, teardown) and returns its outputs *and* its
counter updates; consumers select their tag; before a transform that reads a side
input, everything upstream is persisted on the cluster and the side input gathered from
it (so no step runs twice: WriteToText's initialisation, for one, must not); every leaf
is computed; counters come back as a ``DirectMetrics`` result.

Use ``--runner=winnow.pipelines.dask_runner.DaskRunner --dask_client_address=HOST:PORT``
(``beam.runner: DaskRunner`` in a config selects it).
"""
from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics.execution import MetricsContainer, MetricUpdates
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.dask_runner import DaskRunner as _BeamDaskRunner
from apache_beam.runners.dask.overrides import _GroupByKeyOnly, _Read, dask_overrides
from distributed import WorkerPlugin
from apache_beam.runners.dask.transform_evaluator import (TRANSLATIONS, Flatten, NoOp, OneReceiver,
                                                          get_windowed_value)
from apache_beam.runners.direct.direct_metrics import DirectMetrics
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils import counters
from apache_beam.utils.windowed_value import WindowedValue

READ_SPLIT_BYTES = 64 << 20  # a bounded source is read in splits of about this size


def _run_bundle(items, fn_signature, window_fn, label: str, side_inputs, args, kwargs):
    """One Dask partition = one bundle; returns [(outputs, counter updates)]."""
    receivers = OneReceiver()
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None],
                             tagged_receivers=receivers, per_element_output_counter=None,
                             output_batch_converter=None, process_yields_batches=False,
                             process_batch_yields_elements=False)
    sampler = statesampler.StateSampler("", counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    container = MetricsContainer(label)
    invoker = DoFnInvoker.create_invoker(
        fn_signature, handler, context=DoFnContext(label, state=None), side_inputs=side_inputs,
        input_args=args, input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    with sampler.scoped_state(label, "process", metrics_container=container):
        invoker.invoke_setup()
        invoker.invoke_start_bundle()
        for item in items:
            invoker.invoke_process(get_windowed_value(item, window_fn))
        invoker.invoke_finish_bundle()
        invoker.invoke_teardown()
    # collected after finish_bundle, unlike Beam's DaskRunner; values leave their
    # (global) window, as in Beam's translation, and tagged ones keep their tag
    outs = [beam.pvalue.TaggedOutput(o.tag, o.value.value) if isinstance(o, beam.pvalue.TaggedOutput)
            else o.value for o in receivers.values]
    return [(outs, container.get_cumulative().counters)]


def _outputs(parts):
    return [out for outs, _ in parts for out in outs]


def _counter_updates(parts):
    return [c for _, c in parts]


def _read_splits(splits) -> list[Any]:
    out: list[Any] = []
    for split in splits:
        tracker = split.source.get_range_tracker(split.start_position, split.stop_position)
        out.extend(split.source.read(tracker))
    return out


def _key(item):
    return item[0]


def _group(kv):
    """(key, [(key, windowed value), ...]) -> (key, [windowed value, ...])."""
    key, items = kv
    return key, [wv for _, wv in items]


def _select(items, tag: str | None) -> list[Any]:
    """The elements of one output of a ParDo (main: untagged; else TaggedOutput(tag))."""
    if tag is None:
        return [x for x in items if not isinstance(x, beam.pvalue.TaggedOutput)]
    return [x.value for x in items if isinstance(x, beam.pvalue.TaggedOutput) and x.tag == tag]


class _Builder(PipelineVisitor):
    def __init__(self, client, bag_kwargs: dict[str, Any]):
        self.client = client
        self.bag_kwargs = bag_kwargs
        self.raw: dict[Any, Any] = {}  # producer -> bag (ParDo: outputs of every tag)
        self.pardos: set[Any] = set()
        self.consumed: set[Any] = set()
        self.metric_bags: list[Any] = []

    def _bag(self, pcoll: pvalue.PCollection):
        producer = pcoll.producer
        self.consumed.add(producer)
        bag = self.raw[producer]
        if producer in self.pardos:
            bag = bag.map_partitions(_select, pcoll.tag)
        return bag

    def _persist_all(self) -> None:
        """Compute everything built so far once and keep it on the cluster: what a side
        input needs, and what the main path will read, are then the same results."""
        keys = list(self.raw)
        done = self.client.persist([self.raw[k] for k in keys] + self.metric_bags)
        self.raw = dict(zip(keys, done[:len(keys)]))
        self.metric_bags = list(done[len(keys):])

    def _side_inputs(self, node) -> list[SideInputMap]:
        if not node.side_inputs:
            return []
        self._persist_all()
        out = []
        for si in node.side_inputs:
            values = self.client.compute(self._bag(si.pvalue)).result()
            out.append(SideInputMap(type(si), si._view_options(), _Materialised(values)))
        return out

    def visit_transform(self, node) -> None:
        inputs = [self._bag(p) for p in node.inputs if not isinstance(p, pvalue.PBegin)]
        transform = node.transform
        if isinstance(transform, beam.ParDo):
            side = self._side_inputs(node)
            main = next(iter(node.main_inputs.values()))
            window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
            args, kwargs = transform.raw_side_inputs
            parts = inputs[0].map_partitions(_run_bundle, DoFnSignature(transform.fn), window_fn,
                                             node.full_label, side, list(args), kwargs)
            self.raw[node] = parts.map_partitions(_outputs)
            self.pardos.add(node)
            self.metric_bags.append(parts.map_partitions(_counter_updates))
            return
        if isinstance(transform, _Read):
            # Beam's translation has none (a NoOp): split the source, read splits on workers
            import dask.bag as db

            splits = list(transform.source.split(desired_bundle_size=READ_SPLIT_BYTES))
            self.raw[node] = db.from_sequence(splits, npartitions=max(1, len(splits))
                                              ).map_partitions(_read_splits)
            return
        if isinstance(transform, _GroupByKeyOnly):
            # Beam's translation strips the windows that GroupAlsoByWindow needs
            self.raw[node] = inputs[0].groupby(_key).map(_group)
            return
        op = TRANSLATIONS.get(transform.__class__, NoOp)(node, bag_kwargs=self.bag_kwargs)
        if not inputs:
            self.raw[node] = op.apply(input_bag=None)
        elif isinstance(op, Flatten):
            self.raw[node] = op.apply(input_bag=inputs)
        else:
            self.raw[node] = op.apply(input_bag=inputs[0])

    def leaves(self) -> list[Any]:
        return [bag for node, bag in self.raw.items() if node not in self.consumed]


class _Materialised:
    """A side input's values, already computed (iterated by SideInputMap)."""

    def __init__(self, values: list[Any]):
        self.values = values

    def __iter__(self):
        for v in self.values:
            yield v if isinstance(v, WindowedValue) else get_windowed_value(v, None)


class DaskRunnerResult(PipelineResult):
    def __init__(self, metrics: DirectMetrics):
        super().__init__(PipelineState.DONE)
        self._metrics = metrics

    def wait_until_finish(self, duration=None) -> str:
        return self._state

    def metrics(self) -> DirectMetrics:
        return self._metrics


class FileSystemOptions(WorkerPlugin):
    """A Dask worker plugin: each worker's Beam FileSystems take the pipeline's options
    (S3 endpoint and keys...), as the driver's do, so workers read and write the bucket
    the run names; workers that join later get them too."""

    name = "winnow-filesystem-options"

    def __init__(self, options: dict[str, Any]):
        self.options = options

    def setup(self, worker) -> None:
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import PipelineOptions

        FileSystems.set_options(PipelineOptions.from_dictionary(self.options))


class DaskRunner(_BeamDaskRunner):
    """Runs the pipeline on the Dask cluster at ``--dask_client_address`` and waits."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True,
                                                                    current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        try:
            client.register_plugin(FileSystemOptions(options.get_all_options(drop_default=True)))
            pipeline.replace_all(dask_overrides())
            builder = _Builder(client, bag_kwargs)
            pipeline.visit(builder)
            futures = client.compute(builder.leaves() + builder.metric_bags)
            n_leaves = len(futures) - len(builder.metric_bags)
            ddist.wait(futures)
            for f in futures[:n_leaves]:
                f.result()  # raises a worker's exception here
            metrics = DirectMetrics()
            for f in futures[n_leaves:]:
                for updates in f.result():
                    metrics.commit_logical(None, MetricUpdates(counters=updates))
        finally:
            client.close()
        return DaskRunnerResult(metrics)

