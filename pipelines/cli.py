"""The ``winnow`` command.

  winnow run CONFIG [--set k=v ...] [--force STAGE ...] [-- BEAM OPTIONS]
  winnow validate CONFIG [--set k=v ...]
  winnow eval-intent CONFIG [--set ...]   intent workflow + evaluation table
  winnow eval-lm CONFIG [--set ...]       LM workflow + ablation table
  winnow demo [--out DIR] [--set k=v ...] both workflows on generated demo data
  winnow compare RUN_DIR RUN_DIR ...      runs' metrics side by side, with mean and sd

Unknown ``--flags`` pass through to Beam (``--runner``, ``--direct_num_workers``,
Dataflow options), after those in the config's ``beam`` section.
Exit codes: 0 ok, 2 bad config or input (one message, no traceback), 1 failure.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from winnow.pipelines import fileio
from winnow.pipelines.beam_io import DryRun
from winnow.pipelines.config import ConfigError, IntentConfig, load_config
from winnow.pipelines.stages import OutputNotWritable, RunLocked, local_root, publish

REPORT_SKIPS = ("checkpoints", "data-bin", "encoder")  # models: large, and no report reads them


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="winnow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "validate", "eval-intent", "eval-lm"):
        s = sub.add_parser(name)
        s.add_argument("config")
        s.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key (dotted path)")
        if name != "validate":
            s.add_argument("--force", action="append", default=[], metavar="STAGE",
                           help="redo this stage even if it completed ('all' redoes every stage)")
            s.add_argument("--quiet", action="store_true")
    x = sub.add_parser("extract-partition", help="write the records of one partition of a "
                       "MASSIVE-format file (e.g. a dev split to evaluate on)")
    x.add_argument("input")
    x.add_argument("output")
    x.add_argument("--partition", required=True)
    y = sub.add_parser("split-by-id", help="write a deterministic id-hash slice of a JSONL "
                       "or TSV file (a development evaluation file carved from in-domain data)")
    y.add_argument("input")
    y.add_argument("output")
    y.add_argument("--fraction", type=float, required=True)
    y.add_argument("--header", action="store_true", help="TSV with a header line (kept)")
    y.add_argument("--seed", default="devtest")
    r = sub.add_parser("report", help="(re)build RUN_DIR/report.html")
    r.add_argument("run_dir")
    c = sub.add_parser("compare", help="metrics (and intent curves) of several runs side by "
                       "side, with mean and sd: e.g. seed draws of one config")
    c.add_argument("run_dirs", nargs="+")
    b = sub.add_parser("bench", help="speed of each stage inside Beam vs the raw library")
    b.add_argument("--quick", action="store_true", help="tiny sizes (CI): no speed claims")
    b.add_argument("--out", default="bench.json")
    b.add_argument("--lm-config", default="configs/massive-de.yaml",
                   help="LM config whose bitext mix the bitext-filter row filters")
    d = sub.add_parser("demo")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of both demo configs, e.g. beam.runner=DaskRunner")
    d.add_argument("--force", action="append", default=[], metavar="STAGE")
    d.add_argument("--quiet", action="store_true")
    return p


def _print_table(title: str, metrics: dict[str, Any]) -> None:
    print(f"\n{title}")
    width = max(len(k) for k in metrics) if metrics else 10
    for k, v in metrics.items():
        if isinstance(v, dict):
            v = json.dumps(v)
        elif isinstance(v, float):
            v = f"{v:.4f}"
        print(f"  {k:<{width}}  {v}")


def _run(cfg, beam_args: list[str], force: set[str], quiet: bool) -> dict[str, Any]:
    from winnow.pipelines.report import build_report

    if isinstance(cfg, IntentConfig):
        from winnow.pipelines.intent_workflow import run_intent
        metrics = run_intent(cfg, beam_args, force, quiet)
    else:
        from winnow.pipelines.lm_workflow import run_lm
        metrics = run_lm(cfg, beam_args, force, quiet)
    report = publish(cfg.output_dir, build_report(local_root(cfg.output_dir)))
    if not quiet:
        print(f"[winnow] report: {report}", file=sys.stderr)
    return metrics


def demo(out: str, force: set[str], quiet: bool, overrides: list[str] = (),
         beam_args: list[str] = ()) -> None:
    from winnow.pipelines.demo_data import make_demo_data

    root = Path(out)
    data = make_demo_data(root / "data")
    configs = Path(__file__).resolve().parents[1] / "configs"
    if not (configs / "demo-intent.yaml").exists():
        configs = Path.cwd() / "configs"
    for name, title in (("demo-intent", "intent bootstrapping"), ("demo-lm", "LM bootstrapping")):
        start = time.time()
        cfg = load_config(configs / f"{name}.yaml", [f"output_dir={root / name}", *overrides],
                          check_files=False)
        _rebase(cfg, data)
        metrics = _run(cfg, list(beam_args) or ["--direct_num_workers=1"], force, quiet)
        summary = json.loads((root / name / "summary.json").read_text())
        print(f"\n== demo: {title} -> {root / name}  ({time.time() - start:.0f}s)")
        for stage, rec in summary.items():
            stats = {k: v for k, v in rec["stats"].items() if isinstance(v, (int, float))}
            print(f"  {stage:<16} {rec['seconds']:>7.1f}s  " +
                  ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in list(stats.items())[:6]))
        _print_table(f"metrics ({root / name / 'metrics.json'})",
                     {k: v for k, v in metrics.items() if not isinstance(v, dict)})


def _rebase(cfg, data_dir: Path) -> None:
    """Demo configs name files relative to the generated data folder."""
    from winnow.pipelines.config import _input_files
    for _key, inp in _input_files(cfg):
        inp.path = str(data_dir / inp.path)
    if cfg.eval is not None:
        cfg.eval.test_path = str(data_dir / cfg.eval.test_path)


def extract_partition(src: str, dst: str, partition: str) -> int:
    """Copy the lines of one partition verbatim (the file format is unchanged)."""
    import os
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(src, encoding="utf-8") as fin, open(dst + ".tmp", "w", encoding="utf-8") as fout:
        for line in fin:
            if line.strip() and json.loads(line).get("partition") == partition:
                fout.write(line)
                n += 1
    os.replace(dst + ".tmp", dst)
    return n


def split_by_id(src: str, dst: str, fraction: float, header: bool, seed: str) -> int:
    """Lines whose id hashes below ``fraction``; the same slice every time."""
    import os

    from winnow.pipelines.readers import stable_fraction

    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(src, encoding="utf-8") as fin, open(dst + ".tmp", "w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if header and i == 0:
                fout.write(line)
                continue
            if not line.strip():
                continue
            key = str(json.loads(line)["id"]) if src.endswith(".jsonl") else line.split("\t")[0]
            if stable_fraction(key, seed) < fraction:
                fout.write(line)
                n += 1
    os.replace(dst + ".tmp", dst)
    return n


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, beam_args = _parser().parse_known_args(argv)
    unknown = [a for a in beam_args if not a.startswith("--")]
    if unknown:
        print(f"winnow: unexpected argument(s): {' '.join(unknown)}", file=sys.stderr)
        return 2
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # the driver reads gs:// and s3:// inputs with the run's Beam options (--s3_endpoint_url...)
    fileio.configure(beam_args)
    try:
        if args.command == "extract-partition":
            n = extract_partition(args.input, args.output, args.partition)
            print(f"{args.output}: {n} records of partition '{args.partition}'")
            return 0
        if args.command == "split-by-id":
            n = split_by_id(args.input, args.output, args.fraction, args.header, args.seed)
            print(f"{args.output}: {n} records ({args.fraction:.0%} slice by id hash)")
            return 0
        if args.command == "report":
            from winnow.pipelines.report import build_report
            root = local_root(args.run_dir)
            if not fileio.is_local(args.run_dir) and not (root / "summary.json").exists():
                # a run in a bucket, reported on another machine: what the report reads
                if not fileio.download_tree(args.run_dir, root, skip=REPORT_SKIPS):
                    raise FileNotFoundError(f"{args.run_dir}: no objects there -- not a winnow "
                                            "run (check the bucket and prefix)")
            print(publish(args.run_dir, build_report(root)))
            return 0
        if args.command == "compare":
            from winnow.pipelines.compare import compare_table
            print(compare_table([Path(r) for r in args.run_dirs]))
            return 0
        if args.command == "bench":
            from winnow.pipelines.bench import run_bench
            run_bench(args.quick, Path(args.out), Path(args.lm_config))
            return 0
        if args.command == "demo":
            demo(args.out, set(args.force), args.quiet, args.overrides, beam_args)
            return 0
        cfg = load_config(args.config, args.overrides)
        if args.command == "validate":
            print(f"{args.config}: ok ({cfg.workflow} workflow, output_dir={cfg.output_dir})")
            return 0
        if args.command == "eval-intent" and cfg.workflow != "intent" or \
                args.command == "eval-lm" and cfg.workflow != "lm":
            raise ConfigError(f"{args.config}: workflow: '{cfg.workflow}' does not fit "
                              f"`winnow {args.command}`")
        if args.command.startswith("eval") and cfg.eval is None:
            raise ConfigError(f"{args.config}: eval: required for `winnow {args.command}`")
        start = time.time()
        metrics = _run(cfg, beam_args, set(args.force), args.quiet)
        _print_table(f"{cfg.name}: {fileio.join(cfg.output_dir, 'metrics.json')} "
                     f"({time.time() - start:.0f}s)", metrics)
        if cfg.workflow == "lm":
            from winnow.pipelines.lm_workflow import ablation_table
            print("\n" + ablation_table(metrics))
        return 0
    except ConfigError as err:
        print(f"winnow: config error: {err}", file=sys.stderr)
        return 2
    except DryRun as done:
        print(f"winnow: dry run: {done}", file=sys.stderr)
        return 0
    except (FileNotFoundError, ValueError, RunLocked, OutputNotWritable) as err:
        print(f"winnow: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
