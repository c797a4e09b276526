"""A full disk or a read-only output folder ends the run with one message naming the path,
and the stages completed before stay intact, so the same command resumes."""
import errno
import json
import subprocess

import pytest

from conftest import REPO, intent_cmd
from winnow.pipelines.stages import DONE, OutputNotWritable, StageRunner


def test_a_failed_write_names_the_path_and_keeps_completed_stages(tmp_path):
    st = StageRunner(tmp_path, quiet=True)
    st.run("first", "k1", lambda d: (d / "out.txt").write_text("x") and {})

    def full(d):
        raise OSError(errno.ENOSPC, "No space left on device", str(d / "big.bin"))
    with pytest.raises(OutputNotWritable, match=r"stage second cannot write to .*second\.tmp "
                       r"\(No space left on device: .*big\.bin\)"):
        st.run("second", "k2", full)
    assert (tmp_path / "first" / DONE).exists() and not (tmp_path / "second" / DONE).exists()
    with pytest.raises(ValueError):  # other errors pass through as they are
        st.run("third", "k3", lambda d: int("x"))
    st.release()


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only; where mounting is not allowed the simulated test above
    still covers the path)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _stderr_lines(r) -> list[str]:
    return [x for x in r.stderr.splitlines() if x.startswith("winnow:")]


def test_full_disk_stops_with_one_message_and_resumes(demo_data, small_tmpfs):
    out = small_tmpfs / "run"
    r = subprocess.run(intent_cmd(demo_data, out), cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = _stderr_lines(r)
    assert "No space left on device" in line and str(out) in line and "rerun" in line
    done = sorted(p.parent.name for p in out.glob("*/" + DONE))
    assert done, "no stage completed before the disk filled up"
    keys = {n: json.loads((out / n / DONE).read_text())["key"] for n in done}
    subprocess.run(["mount", "-o", "remount,size=2g", str(small_tmpfs)], check=True)
    r = subprocess.run([a for a in intent_cmd(demo_data, out) if a != "--quiet"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for n in done:  # resumed: what was complete was not redone
        assert f"{n}: done earlier" in r.stderr
        assert json.loads((out / n / DONE).read_text())["key"] == keys[n]
    assert (out / "corpus" / DONE).exists()


def test_read_only_output_folder_stops_with_one_message(demo_data, small_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    out = small_tmpfs / "run"
    r = subprocess.run(intent_cmd(demo_data, out), cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = _stderr_lines(r)
    assert "Read-only file system" in line and str(out) in line
