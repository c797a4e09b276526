"""The run report: self-contained HTML with embedded plots, rendered by headless Chromium."""
import base64
import json
import re
import shutil
import subprocess
import tempfile

import pytest

from winnow.pipelines.report import build_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_report_has_plots_and_renders(reference_run, tmp_path):
    report = build_report(reference_run)
    page = report.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4  # funnel, relevance histogram, curves, embedding map
    for img in images:
        raw = base64.b64decode(img)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 2000
    for heading in ("Funnel: pool", "Relevance scores", "Error vs added data",
                    "Annotated vs selected data", "Metrics", "95% bootstrap band",
                    "oracle reference"):
        assert heading in page
    assert "http://" not in page and "https://" not in page  # self-contained
    metrics = json.loads((reference_run / "metrics.json").read_text())
    f1 = metrics["f1_at_40pct.weather_query"]
    assert (f"F1 per new intent with {metrics['f1_at_40pct.added']} added utterances" in page
            and "<tr><td>weather_query</td>" + "".join(f"<td>{f1[c]}</td>" for c in (
                "diversity", "facility_location", "k_center", "oracle", "random",
                "relevance_topk", "full_budget"))
            + "</tr>" in page)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium not installed (make setup installs it as root)")
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        "--window-size=1100,2600", f"--screenshot={shot}", report.as_uri()],
                       check=True, capture_output=True, timeout=120)
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    assert img.size == (1100, 2600)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # plots drawn, not a blank page
