"""The wheel built from pyproject.toml (what Dataflow stages) carries the four mapped folders."""
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_contains_namespace_and_imports(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(REPO)], check=True,
                   capture_output=True)
    wheel = next(tmp_path.glob("winnow-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("pipelines", "selectors", "translate", "lm"):
        assert any(n.startswith(f"winnow/{folder}/") for n in names), folder
    assert not any(n.startswith("selectors/") for n in names)  # never a top-level selectors
    assert "winnow/pipelines/cli.py" in names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    code = (f"import sys; sys.path.insert(0, {str(unpacked)!r}); import selectors, subprocess; "
            "import winnow.selectors.ngram_relevance as m; print(m.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(unpacked))
