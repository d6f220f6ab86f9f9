"""``cico evaluate --tracking/--breakdown/--report``: the JSON line, the breakdowns, the error analysis, the
HTML report (opened in headless Chromium where it is installed) and bad input as one clean line."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cico.cli import main
from cico.data.synthetic import make_synthetic
from cico.evaluation import evaluate
from cico.evaluation.breakdown import _overlap_ratio, breakdown
from cico.evaluation.error_analysis import ERROR_TYPES, analyse_errors
from cico.evaluation.tracking import TRACKING_KEYS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A small synthetic dataset with frames, and results made from its GT with errors built in:
    an ID switch, a missed object, a false positive, a wrong class."""
    root = tmp_path_factory.mktemp("report")
    ann = make_synthetic(root / "data", 6, 6, (64, 96), seed=3, classes=3, max_objects=3, workers=1)
    gt = json.loads(ann.read_text())
    results = []
    for i, a in enumerate(gt["annotations"]):
        segs = a["segmentations"]
        if i == 1:
            continue  # missed
        cid = a["category_id"] if i != 2 else 1 + a["category_id"] % 3  # wrong class
        if i == 0:  # split halfway over two result tracks: an ID switch
            half = len(segs) // 2
            results.append({"video_id": a["video_id"], "category_id": cid, "score": 0.9,
                            "segmentations": segs[:half] + [None] * (len(segs) - half)})
            results.append({"video_id": a["video_id"], "category_id": cid, "score": 0.8,
                            "segmentations": [None] * half + segs[half:]})
            continue
        results.append({"video_id": a["video_id"], "category_id": cid, "score": 0.5 + 0.01 * i,
                        "segmentations": segs})
    other = gt["annotations"][-1]
    results.append({"video_id": gt["annotations"][0]["video_id"], "category_id": other["category_id"], "score": 0.95,
                    "segmentations": other["segmentations"]})  # a false positive from another video
    res = root / "results.json"
    res.write_text(json.dumps(results))
    return ann, res, ann.parent / "JPEGImages"


def test_json_line_holds_the_tracking_metrics_with_trackeval_names(dataset, capsys) -> None:
    ann, res, _ = dataset
    assert main(["evaluate", str(ann), str(res), "--tracking", "--json", "--track-score-thresh", "0.85"]) == 0
    out = capsys.readouterr().out
    line = json.loads(out.strip().splitlines()[-1])
    assert set(line["tracking"]) == {"class_avg", "det_avg"}
    for part in ("class_avg", "det_avg"):
        assert list(line["tracking"][part]) == list(TRACKING_KEYS)
    assert line["tracking"]["det_avg"]["IDSW"] == 1
    thresholded = line["tracking_score_thresh"]
    assert thresholded["score_thresh"] == 0.85
    assert thresholded["det_avg"]["CLR_TP"] < line["tracking"]["det_avg"]["CLR_TP"]
    assert "result tracks with score >= 0.85" in out
    assert line["AP"] == pytest.approx(evaluate(ann, res).stats["AP"])


def test_breakdown_and_error_analysis_find_the_built_in_errors(dataset, capsys) -> None:
    ann, res, _ = dataset
    result = evaluate(ann, res, tracking=True, details=True)
    parts = breakdown(result)
    assert [r.ap for r in parts.per_video] == sorted(r.ap for r in parts.per_video)  # every video has GT here
    assert sum(len(g.videos) for g in parts.by_length) == 6
    assert sum(len(g.videos) for g in parts.by_occlusion) == 6
    # a group of every video scores the overall numbers
    stats, _ = result.details.stats(None)
    assert stats == result.stats
    errors = analyse_errors(result.details)
    assert errors.ap50 == pytest.approx(result.stats["AP50"])
    assert errors.counts["missed"] >= 1 and errors.counts["id_switch"] == 1 and errors.counts["classification"] == 1
    assert errors.recovered["id_switch"] > 0 and errors.recovered["missed"] > 0
    assert set(errors.recovered) == set(ERROR_TYPES)
    assert main(["evaluate", str(ann), str(res), "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "By occlusion (MBOR)" in out and "Per video, worst AP first" in out and "id_switch" in out


def test_overlap_ratio_of_boxes() -> None:
    # two 10x10 boxes overlapping on 5x10: covered twice 50, covered at least once 150
    assert _overlap_ratio(np.array([[0, 0, 10, 10], [5, 0, 10, 10]], float)) == pytest.approx(50 / 150)
    assert _overlap_ratio(np.array([[0, 0, 10, 10]], float)) == 0.0
    assert _overlap_ratio(np.array([[0, 0, 4, 4], [10, 10, 4, 4]], float)) == 0.0


@pytest.fixture(scope="module")
def report(dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ann, res, frames = dataset
    out = tmp_path_factory.mktemp("out") / "report"
    assert main(["evaluate", str(ann), str(res), "--report", str(out), "--frames", str(frames)]) == 0
    return out


def test_report_writes_page_figures_and_every_number(report: Path) -> None:
    page = (report / "report.html").read_text()
    names = {p.name for p in (report / "figures").iterdir()}
    assert {"pr_curves.png", "ap_breakdown.png", "errors.png"} <= names
    strips = [n for n in names if n.startswith("worst_")]
    assert len(strips) == 5
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page), "the page must not need the network"
    assert page.count("data:image/png;base64,") == 3 + len(strips)
    metrics = json.loads((report / "metrics.json").read_text())
    expected = {"stats", "per_class_ap", "tracking", "tracking_per_class", "breakdown", "errors", "pr_curves"}
    assert expected <= set(metrics)
    assert set(metrics["tracking_per_class"]["disc"]) == set(TRACKING_KEYS)
    assert len(metrics["pr_curves"]["IoU=0.50"]["mean over classes"]) == 101
    assert not list(report.rglob("*.partial"))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

_PROBE = """<script>
window.addEventListener('error', e => { document.title = 'ERROR ' + (e.target.alt || e.message); }, true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
  if (!document.title.startsWith('ERROR'))
    document.title = 'IMAGES ' + imgs.length + ' BROKEN ' + bad.length;
});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_report_opens_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """Every figure loads, nothing errors in the console, and a screenshot is taken."""
    probe = tmp_path / "probe.html"
    probe.write_text((report / "report.html").read_text().replace("</body>", _PROBE))
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--user-data-dir=" + str(tmp_path / "profile"), "--enable-logging=stderr", "--v=0"]
    env = dict(os.environ, HOME=str(tmp_path))
    run = subprocess.run(base + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, env=env,
                         check=False)
    title = re.search(r"<title>(.*?)</title>", run.stdout)
    assert title is not None, run.stderr[-2000:]
    assert re.fullmatch(r"IMAGES (\d+) BROKEN 0", title.group(1)), title.group(1)
    assert int(title.group(1).split()[1]) == 8  # 3 figures and 5 strips
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = report / "screenshot.png"
    run = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars",
                                 (report / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000, run.stderr[-2000:]


def test_bad_input_is_one_clean_line(dataset, tmp_path: Path, capsys) -> None:
    ann, res, frames = dataset
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = []
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["--report", str(locked / "out")], "cannot write the report there"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases += [
        (["--report", str(blocker / "out")], "cannot write the report there"),
        (["--report", str(tmp_path / "r"), "--frames", str(tmp_path / "nope")], "frames folder not found"),
        (["--frames", str(frames)], "--frames only serves --report"),
    ]
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"video_id": 999, "category_id": 1, "score": 0.5, "segmentations": [None]}]))
    for extra, message in cases:
        assert main(["evaluate", str(ann), str(res), "--tracking", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert main(["evaluate", str(ann), str(unknown), "--tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "video_id 999 is not a video of the ground truth" in err[0], err
    missing = tmp_path / "frames"
    shutil.copytree(frames, missing)
    for video in missing.iterdir():
        shutil.rmtree(video)
    assert main(["evaluate", str(ann), str(res), "--report", str(tmp_path / "r2"), "--frames", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frame file not found" in err[0], err
    assert not (tmp_path / "r2" / "report.html").exists()
