"""The card layout: four code folders mapped into ``winnow`` with no __init__.py."""
import subprocess
import sys

from conftest import REPO

FOLDERS = ("pipelines", "selectors", "translate", "lm")


def test_code_folders_have_no_init_py():
    for folder in FOLDERS:
        assert (REPO / folder).is_dir()
        assert not (REPO / folder / "__init__.py").exists(), folder


def test_stdlib_selectors_not_shadowed_from_repo_root():
    code = ("import subprocess, selectors, asyncio; "
            "assert hasattr(selectors, 'DefaultSelector'), selectors.__file__; "
            "print(subprocess.run(['true']).returncode)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_namespace_imports_from_repo_root():
    code = ("import winnow.selectors.ngram_relevance, winnow.lm.scoring, "
            "winnow.translate.fairseq_nmt, winnow.pipelines.cli; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_models_never_import_pipelines():
    for folder in ("selectors", "translate", "lm"):
        for path in (REPO / folder).glob("*.py"):
            assert "winnow.pipelines" not in path.read_text(), path
    for path in (REPO / "selectors").glob("*.py"):
        assert "winnow.translate" not in path.read_text(), path
    for path in (REPO / "lm").glob("*.py"):
        assert "winnow.translate" not in path.read_text(), path
