"""What a stage key covers: a changed input file re-runs the stages that read it and
everything after them (and the log names the file); a config key re-runs only its own stage
and what follows; one run per output folder."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, intent_cmd, lm_cmd
from winnow.pipelines.stages import LOCK, RunLocked, StageRunner

UPSTREAM = ("prepare", "relevance", "paraphrase", "upper_bound")
AFTER_POOL = ("pool", "self_training", "reference_curves", "diversity", "curves", "corpus")


def _done_times(run) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in run.glob("*/_DONE.json")}


@pytest.fixture(scope="module")
def own_run(demo_data, tmp_path_factory):
    """A run on a copy of the demo data, so the test may change the data."""
    root = tmp_path_factory.mktemp("keys")
    data = root / "data"
    shutil.copytree(demo_data, data)
    out = root / "run"
    r = subprocess.run(intent_cmd(data, out), cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return data, out


def test_appended_pool_reruns_pool_and_after_and_new_utterances_reach_the_corpus(own_run):
    data, out = own_run
    before = _done_times(out)
    read_before = json.loads((out / "pool" / "_DONE.json").read_text())["stats"]["read"]
    pool = data / "pool.txt"
    old = set(pool.read_text().splitlines())
    new = [f"please set an alarm for {h} {m} {ap} on {day}" for h in ("six", "seven", "eight", "nine", "ten")
           for m in ("oclock", "fifteen", "thirty", "forty five") for ap in ("am", "pm")
           for day in ("monday", "tuesday", "friday", "saturday", "sunday")]
    assert len(new) == 200 and not set(new) & old
    with open(pool, "a", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in new))
    r = subprocess.run([a for a in intent_cmd(data, out) if a != "--quiet"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"pool: input changed: {pool}" in r.stderr
    after = _done_times(out)
    assert all(after[s] == before[s] for s in UPSTREAM)
    assert all(after[s] != before[s] for s in AFTER_POOL)
    read = json.loads((out / "pool" / "_DONE.json").read_text())["stats"]["read"]
    assert read == read_before + 200
    corpus = {json.loads(x)["text"] for x in (out / "corpus" / "corpus.jsonl").open()}
    assert corpus & set(new)


def test_config_edit_reruns_its_stage_and_what_follows_only(own_run):
    data, out = own_run
    before = _done_times(out)
    r = subprocess.run(intent_cmd(data, out) + ["--set", "diversity.objective=coverage"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    after = _done_times(out)
    # another selector: its order and the curves that read it, not the reference orders'
    assert {s for s in after if after[s] != before[s]} == {"diversity", "curves", "corpus"}


def test_one_run_per_output_folder(demo_data, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                 "started": 0}))
        with pytest.raises(RunLocked, match=f"pid {sleeper.pid}"):
            StageRunner(tmp_path, quiet=True)
        # the CLI says so in one line and exits 2
        r = subprocess.run(lm_cmd(demo_data, tmp_path), cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 2 and f"pid {sleeper.pid}" in r.stderr and "Traceback" not in r.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is gone: its lock is stale and the next run takes it over
    runner = StageRunner(tmp_path, quiet=True)
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    runner.release()
    assert not (tmp_path / LOCK).exists()


def test_run_all_follows_dependencies_and_runs_concurrent_stages_side_by_side(tmp_path):
    import threading
    import time

    from winnow.pipelines.stages import Stage

    log, live, peak = [], set(), [0]
    lock = threading.Lock()

    def work(name, seconds=0.2):
        def fn(d):
            with lock:
                live.add(name)
                peak[0] = max(peak[0], len(live))
                log.append(f"start {name}")
            time.sleep(seconds)
            with lock:
                live.discard(name)
                log.append(f"end {name}")
            return {}
        return fn

    st = StageRunner(tmp_path, quiet=True)
    st.run_all([Stage("prep", "k", work("prep")),
                Stage("a", "k", work("a"), ("prep",), concurrent=True),
                Stage("b", "k", work("b"), ("prep",), concurrent=True),
                Stage("c", "k", work("c"), ("prep",), concurrent=True),
                Stage("join", "k", work("join"), ("a", "b", "c"))], workers=2)
    assert log[:2] == ["start prep", "end prep"] and log[-2:] == ["start join", "end join"]
    assert peak[0] == 2  # never more than the workers, and never the exclusive ones beside others
    assert all((tmp_path / n / "_DONE.json").exists() for n in ("prep", "a", "b", "c", "join"))

    def boom(d):
        raise ValueError("stage failed")
    with pytest.raises(ValueError, match="stage failed"):
        st.run_all([Stage("x", "k2", boom, concurrent=True),
                    Stage("y", "k2", work("y"), concurrent=True),
                    Stage("z", "k2", work("z"), ("x",))], workers=2)
    assert (tmp_path / "y" / "_DONE.json").exists() and not (tmp_path / "z").exists()
    st.release()
