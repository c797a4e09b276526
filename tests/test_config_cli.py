"""Config validation and CLI errors: one clear message naming file and key, exit code 2."""
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from winnow.pipelines import launch
from winnow.pipelines.config import ConfigError, load_config

BASE = {"workflow": "intent", "output_dir": "out", "new_intents": ["a"],
        "annotated": [{"path": "data.jsonl", "format": "massive"}],
        "pool": [{"path": "pool.txt", "format": "text"}]}


def write(tmp_path, cfg):
    (tmp_path / "data.jsonl").write_text("")
    (tmp_path / "pool.txt").write_text("")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_valid_config_and_override(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["relevance.top_k=7", "output_dir=elsewhere"])
    assert cfg.relevance.top_k == 7
    assert cfg.output_dir == "elsewhere"
    assert cfg.annotated[0].path == str((tmp_path / "data.jsonl").resolve())


@pytest.mark.parametrize("change, key, words", [
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"seeds_per_intent": "many"}, "seeds_per_intent", "integer"),
    ({"relevance": {"top_k": 5, "threshold": 0.5}}, "relevance", "exactly one"),
    ({"self_training": {"confidence": 1.5}}, "self_training.confidence", "less than or equal"),
    ({"pool": [{"path": "missing.txt", "format": "text"}]}, "pool.0.path", "file not found"),
    ({"pool": [{"path": "pool.txt", "format": "xml"}]}, "pool.0.format", "Input should be"),
    ({"paraphrase": {"embedding_model": "minilm-int8"}}, "paraphrase.embedding_model",
     "int8 ONNX export"),
])
def test_bad_configs_name_the_key(tmp_path, change, key, words):
    p = write(tmp_path, {**BASE, **change})
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and key in msg and words in msg, msg


def test_missing_relative_path_says_where_it_was_looked_up(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    p = write(tmp_path, {**BASE, "pool": [{"path": "sub/pool.txt", "format": "text"}]})
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(tmp_path.resolve()) in msg and str(elsewhere) in msg and "WINNOW_DATA" in msg, msg


def test_missing_required_key(tmp_path):
    cfg = dict(BASE)
    del cfg["new_intents"]
    with pytest.raises(ConfigError, match="new_intents: required key is missing"):
        load_config(write(tmp_path, cfg))


def test_env_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("WINNOW_DATA", str(tmp_path))
    cfg = load_config(write(tmp_path, {**BASE, "pool": [
        {"path": "${WINNOW_DATA:-/nowhere}/pool.txt", "format": "text"}]}))
    assert cfg.pool[0].path == str(tmp_path / "pool.txt")


def test_cli_bad_config_exit_2_no_traceback(tmp_path):
    p = write(tmp_path, {**BASE, "relevance": {"top_k": -3}})
    out = subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "validate", str(p)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert "relevance.top_k" in out.stderr and "Traceback" not in out.stderr


def test_cli_validate_ok(tmp_path):
    out = subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "validate",
                          str(write(tmp_path, BASE))], capture_output=True, text=True)
    assert out.returncode == 0 and "ok (intent workflow" in out.stdout


def test_the_command_caps_thread_spinning_before_numpy_loads(tmp_path):
    """BLAS and OpenMP runtimes read their spin settings once, when they load: the console
    command sets them before anything loads numpy, and keeps a value the user set."""
    probe = ("import os, sys\n"
             "from winnow.pipelines import launch\n"
             "assert 'numpy' not in sys.modules\n"
             "sys.argv = ['winnow', 'validate', sys.argv[1]]\n"
             "assert launch.main() == 0\n"
             "print(os.environ['GOMP_SPINCOUNT'], os.environ['OPENBLAS_THREAD_TIMEOUT'])\n")
    env = {k: v for k, v in os.environ.items() if k not in launch.SPIN_LIMITS}
    cfg = str(write(tmp_path, BASE))
    out = subprocess.run([sys.executable, "-c", probe, cfg], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == [launch.SPIN_LIMITS["GOMP_SPINCOUNT"],
                                       launch.SPIN_LIMITS["OPENBLAS_THREAD_TIMEOUT"]]
    out = subprocess.run([sys.executable, "-c", probe, cfg], capture_output=True, text=True,
                         env={**env, "GOMP_SPINCOUNT": "7"})
    assert out.stdout.split()[-2] == "7"


def test_shipped_configs_are_valid():
    for name in ("demo-intent", "demo-lm", "massive-intent", "massive-de", "snips-hi",
                 "dataflow-massive-intent"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml", check_files=False)
        assert cfg.output_dir


@pytest.mark.parametrize("overrides, words", [
    (["general_text.enabled=true", "bitext_filter.shortlist=null"], "set bitext_filter.shortlist"),
    (["general_text.new_words=[]"], "non-empty list"),
    (["general_text.in_domain=[5, -1]"], "non-empty list"),
])
def test_bad_general_text_settings_say_what_to_change(tmp_path, overrides, words):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "massive-de.yaml", [f"output_dir={tmp_path}", *overrides],
                    check_files=False)
    assert "general_text" in str(err.value) and words in str(err.value), str(err.value)
