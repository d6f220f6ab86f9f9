"""``cico import-data`` / ``cico export-data``: the five formats on small files written here, round trips, bad input."""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import SHARED
from PIL import Image
from pycocotools import mask as mask_utils

from cico.cli import main
from cico.data.annotations import Annotations, load_annotations
from cico.data.formats.cvat import interpolate_polygon
from cico.data.formats.ytvos import davis_palette
from cico.data.rle import encode

H, W = 24, 32


def box(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def write_frames(folder: Path, count: int, suffix: str = ".jpg") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for f in range(count):
        cv2.imwrite(str(folder / f"{f:05d}{suffix}"), np.full((H, W, 3), 30 * f, np.uint8))
        names.append(f"{f:05d}{suffix}")
    return names


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def masks_by_track(ann: Annotations) -> list[tuple[str, str, bool, tuple[Any, ...]]]:
    """Each track as (video folder, class name, crowd, per-frame mask bytes or None), sorted: ids aside."""
    names = {c.id: c.name for c in ann.categories}
    out = []
    for t in ann.tracks:
        video = ann.video(t.video_id)
        frames = tuple(None if (m := ann.mask(t, f)) is None else m.tobytes() for f in range(video.length))
        out.append((Path(video.file_names[0]).parent.as_posix(), names[t.category_id], t.iscrowd, frames))
    return sorted(out, key=repr)


def ytvis_dataset(root: Path) -> tuple[Path, Path]:
    """Two videos of 4 frames: video a has a cat and two dogs (one absent in frames 1-2), video b one dog."""
    frames = root / "frames"
    cat, dog1, dog2 = box(2, 10, 2, 12), box(12, 20, 4, 14), box(3, 9, 20, 30)
    videos = []
    for vid, name in ((1, "a"), (2, "b")):
        files = write_frames(frames / name, 4)
        videos.append({"id": vid, "width": W, "height": H, "length": 4, "file_names": [f"{name}/{n}" for n in files]})

    def track(tid: int, vid: int, cid: int, masks: list[np.ndarray | None]) -> dict[str, Any]:
        return {"id": tid, "video_id": vid, "category_id": cid, "iscrowd": 0,
                "segmentations": [None if m is None else encode(m) for m in masks]}

    data = {"videos": videos, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
            "annotations": [track(1, 1, 1, [cat, cat, np.roll(cat, 2, 1), cat]),
                            track(2, 1, 2, [dog1, None, None, np.roll(dog1, 3, 1)]),
                            track(3, 1, 2, [dog2] * 4),
                            track(4, 2, 2, [None, dog1, dog1, None])]}
    ann = root / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, frames


# ------------------------------------------------------------------------------------------------- ytvos


def write_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (values.shape[1], values.shape[0]), values.astype(np.uint8).tobytes())
    image.putpalette(davis_palette())
    image.save(path)


def test_ytvos_objects_absent_frames_void_and_meta(tmp_path: Path, capsys) -> None:
    src = tmp_path / "ytvos"
    write_frames(src / "JPEGImages" / "v1", 3)
    one, two = box(0, 8, 0, 8), box(10, 20, 10, 20)
    write_png(src / "Annotations" / "v1" / "00000.png", one * 1 + two * 2)
    write_png(src / "Annotations" / "v1" / "00002.png", one * 2 + box(20, 24, 0, 32) * 255)  # frame 1: no PNG
    (src / "meta.json").write_text(json.dumps({"videos": {"v1": {"objects": {
        "1": {"category": "cat", "frames": ["00000"]}, "2": {"category": "cat", "frames": ["00000", "00002"]}}}}}))
    out = tmp_path / "ann.json"
    code, stdout, _ = run(capsys, "import-data", "ytvos", str(src), "--out", str(out))
    assert code == 0 and "1 videos, 3 frames, 2 tracks (+1 crowd), 1 classes" in stdout
    assert str(src / "JPEGImages") in stdout
    ann = load_annotations(out)
    first, second, void = ann.tracks
    assert [c.name for c in ann.categories] == ["cat"] and void.iscrowd and not first.iscrowd
    assert np.array_equal(ann.mask(first, 0), one) and ann.mask(first, 1) is None and ann.mask(first, 2) is None
    assert np.array_equal(ann.mask(second, 0), two) and np.array_equal(ann.mask(second, 2), one)
    assert ann.mask(second, 1) is None and np.array_equal(ann.mask(void, 2), box(20, 24, 0, 32))
    assert main(["check-data", "--ann", str(out), "--frames", str(src / "JPEGImages")]) == 0
    # only the annotated frames; void regions dropped
    code, stdout, _ = run(capsys, "import-data", "ytvos", str(src), "--out", str(out), "--annotated-only",
                          "--ignore-regions", "drop")
    assert code == 0 and "1 videos, 2 frames, 2 tracks, 1 classes" in stdout
    assert load_annotations(out).videos[0].file_names == ["v1/00000.jpg", "v1/00002.jpg"]


def test_ytvos_reads_the_real_davis_binary_masks_exactly(tmp_path: Path, capsys) -> None:
    davis = SHARED / "data" / "davis2016_mini"
    src = tmp_path / "davis"
    for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
        (src / kind / "dog").mkdir(parents=True)
        for f in range(4):
            shutil.copy(davis / kind / "dog" / f"{f:05d}{suffix}", src / kind / "dog")
    out = tmp_path / "ann.json"
    assert run(capsys, "import-data", "ytvos", str(src), "--out", str(out), "--category", "dog")[0] == 0
    mine, truth = load_annotations(out), load_annotations(davis / "instances.json")
    (track,) = mine.tracks
    (video,) = [v for v in truth.videos if v.file_names[0].startswith("dog/")]
    (expected,) = truth.tracks_of(video.id)
    for f in range(4):
        assert np.array_equal(mine.mask(track, f), truth.mask(expected, f))
        assert track.bboxes[f] == expected.bboxes[f] and track.areas[f] == expected.areas[f]


def test_ytvos_round_trip_and_bad_png(tmp_path: Path, capsys) -> None:
    ann, frames = ytvis_dataset(tmp_path)
    exported = tmp_path / "exported"
    code, stdout, err = run(capsys, "export-data", "ytvos", str(ann), "--out", str(exported), "--frames", str(frames))
    assert code == 0 and "2 videos, 8 frames, 4 objects as ytvos" in stdout and err == ""
    back = tmp_path / "back.json"
    assert run(capsys, "import-data", "ytvos", str(exported), "--out", str(back))[0] == 0
    assert masks_by_track(load_annotations(back)) == masks_by_track(load_annotations(ann))
    # a mask of the wrong size: one line naming the PNG, exit 2, the old output kept
    write_png(exported / "Annotations" / "a" / "00001.png", np.zeros((H + 1, W), np.uint8))
    before = back.read_bytes()
    code, _, err = run(capsys, "import-data", "ytvos", str(exported), "--out", str(back))
    assert code == 2 and "a/00001.png: mask is 32x25 but the frame is 32x24" in err and err.count("\n") == 1
    assert back.read_bytes() == before


# -------------------------------------------------------------------------------------------------- mots


def rle_text(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")


def test_mots_kitti_txt_ignore_regions_and_absent_frames(tmp_path: Path, capsys) -> None:
    src = tmp_path / "kitti"
    write_frames(src / "image_02" / "0001", 3, ".png")
    car, person, person2, ignore = box(0, 8, 0, 10), box(10, 20, 0, 6), box(10, 20, 20, 26), box(20, 24, 0, 32)
    lines = [f"0 1001 1 {H} {W} {rle_text(car)}", f"0 2001 2 {H} {W} {rle_text(person)}",
             f"0 10000 10 {H} {W} {rle_text(ignore)}", f"2 1001 1 {H} {W} {rle_text(car)}",
             f"2 2002 2 {H} {W} {rle_text(person2)}"]
    (src / "instances_txt").mkdir()
    (src / "instances_txt" / "0001.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ann.json"
    code, stdout, _ = run(capsys, "import-data", "mots", str(src), "--out", str(out))
    assert code == 0 and "1 videos, 3 frames, 3 tracks (+2 crowd), 2 classes" in stdout
    ann = load_annotations(out)
    assert {c.id: c.name for c in ann.categories} == {1: "car", 2: "pedestrian"}
    by_class = {(t.category_id, t.iscrowd): t for t in ann.tracks}
    car_track = next(t for t in ann.tracks if t.category_id == 1 and not t.iscrowd)
    assert np.array_equal(ann.mask(car_track, 2), car) and ann.mask(car_track, 1) is None
    assert np.array_equal(ann.mask(by_class[(1, True)], 0), ignore) and by_class[(2, True)].iscrowd
    assert main(["check-data", "--ann", str(out), "--frames", str(src / "image_02")]) == 0
    code, stdout, _ = run(capsys, "import-data", "mots", str(src), "--out", str(out), "--ignore-regions", "drop")
    assert "3 tracks, 2 classes" in stdout


def test_mots_challenge_and_png_variant(tmp_path: Path, capsys) -> None:
    person = box(2, 12, 3, 9)
    challenge = tmp_path / "challenge"
    write_frames(challenge / "MOTS20-02" / "img1", 2)
    (challenge / "MOTS20-02" / "gt").mkdir()
    (challenge / "MOTS20-02" / "gt" / "gt.txt").write_text(f"2 2005 2 {H} {W} {rle_text(person)}\n")  # 1-based
    out = tmp_path / "ann.json"
    code, stdout, _ = run(capsys, "import-data", "mots", str(challenge), "--out", str(out))
    assert code == 0 and str(challenge) in stdout
    ann = load_annotations(out)
    (track,) = ann.tracks
    assert ann.mask(track, 0) is None and np.array_equal(ann.mask(track, 1), person)
    assert ann.videos[0].file_names[1] == "MOTS20-02/img1/00001.jpg"
    png = tmp_path / "png"
    write_frames(png / "images" / "s", 1, ".png")
    (png / "instances" / "s").mkdir(parents=True)
    values = (person.astype(np.uint16) * 2003 + box(20, 24, 0, 32).astype(np.uint16) * 10000)
    cv2.imwrite(str(png / "instances" / "s" / "00000.png"), values)
    code, stdout, _ = run(capsys, "import-data", "mots", str(png), "--out", str(out))
    assert code == 0 and "1 tracks (+1 crowd)" in stdout
    ann = load_annotations(out)
    assert np.array_equal(ann.mask(next(t for t in ann.tracks if not t.iscrowd), 0), person)


def test_mots_round_trip_and_bad_lines(tmp_path: Path, capsys) -> None:
    ann, frames = ytvis_dataset(tmp_path)
    exported = tmp_path / "mots"
    code, _, err = run(capsys, "export-data", "mots", str(ann), "--out", str(exported), "--frames", str(frames))
    assert code == 0 and err == ""
    first = (exported / "instances_txt" / "a.txt").read_text().splitlines()[0].split()
    assert first[:5] == ["0", "1001", "1", str(H), str(W)]  # cat: category id 1 -> class 1
    back = tmp_path / "back.json"
    assert run(capsys, "import-data", "mots", str(exported), "--out", str(back), "--classes", "1=cat,2=dog")[0] == 0
    assert masks_by_track(load_annotations(back)) == masks_by_track(load_annotations(ann))
    txt = exported / "instances_txt" / "a.txt"
    good = txt.read_text()
    for bad, message in ((f"0 1001 1 {H} {W} not-an-rle!\n", "line 1: RLE string has a character outside"),
                         (f"0 1001 1 {H} 99 {rle_text(box(0, 1, 0, 1))}\n", "line 1: mask size 99x24 differs"),
                         (f"9 1001 1 {H} {W} {rle_text(box(0, 1, 0, 1))}\n", "line 1: frame 9 has no image"),
                         (f"0 3001 3 {H} {W} {rle_text(box(0, 1, 0, 1))}\n", "line 1: class id 3 has no name")):
        txt.write_text(bad + good)
        code, _, err = run(capsys, "import-data", "mots", str(exported), "--out", str(tmp_path / "new.json"),
                           "--classes", "1=cat,2=dog")
        assert code == 2 and f"{txt}: {message}" in err and err.count("\n") == 1, err
        assert not (tmp_path / "new.json").exists()


# ------------------------------------------------------------------------------------------------ labelme


def labelme_file(path: Path, shapes: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"version": "5.4.1", "imagePath": path.with_suffix(".jpg").name, "imageData": None,
                                "imageHeight": H, "imageWidth": W, "shapes": shapes, "flags": {}}))


def shape(label: str, points: list[list[float]], group: int | None, kind: str = "polygon", **extra) -> dict:
    return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}, **extra}


def test_labelme_tracks_unions_shape_types_and_overlaps(tmp_path: Path, capsys) -> None:
    src = tmp_path / "labelme"
    write_frames(src / "clip", 3)
    triangle = [[2, 2], [14, 2], [2, 14]]
    crop = np.zeros((4, 6), np.uint8)
    crop[1:3, 2:5] = 1
    buffer = io.BytesIO()
    Image.fromarray(crop * 255).convert("1").save(buffer, format="PNG")
    labelme_file(src / "clip" / "00000.json", [
        shape("cat", triangle, 1), shape("cat", [[20, 2], [28, 10]], 1, "rectangle"),  # one track: union
        shape("dog", [[8, 8], [12, 8]], 2, "circle"),  # overlaps the cat
        shape("dog", [[20, 14], [25, 17]], 3, "mask", mask=base64.b64encode(buffer.getvalue()).decode()),
        shape("dog", [[1, 1], [5, 5]], 4, "line")])
    labelme_file(src / "clip" / "00002.json", [shape("cat", triangle, 1)])  # frame 1 has no JSON
    out = tmp_path / "ann.json"
    code, stdout, err = run(capsys, "import-data", "labelme", str(src), "--out", str(out))
    assert code == 0 and "1 videos, 3 frames, 3 tracks, 2 classes" in stdout and "1 'line' shapes" in err
    ann = load_annotations(out)
    cat, dog, dog_mask = ann.tracks
    tri = mask_utils.decode(mask_utils.frPyObjects([sum(triangle, [])], H, W))[..., 0]
    rect = mask_utils.decode(mask_utils.frPyObjects([[20, 2, 28, 2, 28, 10, 20, 10]], H, W))[..., 0]
    assert np.array_equal(ann.mask(cat, 0), tri | rect) and ann.mask(cat, 1) is None
    assert np.array_equal(ann.mask(cat, 2), tri)
    assert (ann.mask(dog, 0) & ann.mask(cat, 0)).any() and ann.mask(dog, 0).sum() > 40  # a circle of radius 4
    expected = np.zeros((H, W), np.uint8)
    expected[14:18, 20:26] = crop
    assert np.array_equal(ann.mask(dog_mask, 0), expected)
    assert main(["check-data", "--ann", str(out), "--frames", str(src)]) == 0


def test_labelme_shape_without_group_is_an_error_or_its_own_track(tmp_path: Path, capsys) -> None:
    src = tmp_path / "labelme"
    write_frames(src / "clip", 1)
    labelme_file(src / "clip" / "00000.json", [shape("cat", [[2, 2], [9, 2], [2, 9]], None),
                                               shape("cat", [[12, 2], [19, 2], [12, 9]], None)])
    out = tmp_path / "ann.json"
    code, _, err = run(capsys, "import-data", "labelme", str(src), "--out", str(out))
    assert code == 2 and f"{src / 'clip' / '00000.json'}: shape 0 ('cat') has no group_id" in err
    assert not out.exists()
    code, stdout, _ = run(capsys, "import-data", "labelme", str(src), "--out", str(out), "--ungrouped-as-tracks")
    assert code == 0 and "2 tracks" in stdout


# --------------------------------------------------------------------------------------------------- cvat


def runs(flat: np.ndarray) -> list[int]:
    """Lengths of the alternating runs of 0 and 1 of a flat binary array, starting with 0s."""
    out, value, count = [], 0, 0
    for v in flat.tolist():
        if v == value:
            count += 1
        else:
            out.append(count)
            value, count = v, 1
    return out + [count]


def cvat_rle(mask: np.ndarray) -> tuple[str, int, int, int, int]:
    """CVAT's mask code of a full-frame mask: runs of 0/1 row by row within its tight box."""
    ys, xs = np.nonzero(mask)
    top, left, bottom, right = ys.min(), xs.min(), ys.max(), xs.max()
    counts = runs(mask[top:bottom + 1, left:right + 1].ravel())
    return ",".join(map(str, counts)), left, top, right - left + 1, bottom - top + 1


def cvat_xml(tracks: str, frames: int = 4) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><name>clip'
            f'</name><size>{frames}</size><original_size><width>{W}</width><height>{H}</height></original_size>'
            f'</task></meta>{tracks}</annotations>')


def test_cvat_polygons_interpolated_masks_outside_and_boxes(tmp_path: Path, capsys) -> None:
    src = tmp_path / "cvat"
    write_frames(src / "images", 4, ".png")
    blob = np.zeros((H, W), np.uint8)
    blob[5:9, 20:23] = 1
    blob[6, 25] = 1  # not a rectangle: the runs must be row-major within the box
    rle, left, top, width, height = cvat_rle(blob)
    square0, square2 = "2,2;10,2;10,10;2,10", "6,6;14,6;14,14;6,14"
    (src / "annotations.xml").write_text(cvat_xml(
        f'<track id="0" label="cat" source="manual">'
        f'<polygon frame="0" outside="0" occluded="0" keyframe="1" points="{square0}" z_order="0"/>'
        f'<polygon frame="2" outside="0" occluded="0" keyframe="1" points="{square2}" z_order="0"/>'
        f'<polygon frame="3" outside="1" occluded="0" keyframe="1" points="{square2}" z_order="0"/></track>'
        f'<track id="1" label="dog" source="manual">'
        f'<mask frame="1" outside="0" occluded="0" keyframe="1" rle="{rle}" left="{left}" top="{top}" '
        f'width="{width}" height="{height}" z_order="0"/></track>'
        f'<track id="2" label="dog"><box frame="0" outside="0" keyframe="1" xtl="1" ytl="1" xbr="5" ybr="5"/>'
        f'</track>'))
    out = tmp_path / "ann.json"
    code, stdout, err = run(capsys, "import-data", "cvat", str(src), "--out", str(out))
    assert code == 0 and "1 videos, 4 frames, 2 tracks, 2 classes" in stdout and "1 tracks of boxes only" in err
    ann = load_annotations(out)
    cat, dog = ann.tracks
    polygon = lambda text: mask_utils.decode(mask_utils.frPyObjects(  # noqa: E731
        [[float(v) for p in text.split(";") for v in p.split(",")]], H, W))[..., 0]
    assert np.array_equal(ann.mask(cat, 0), polygon(square0)) and np.array_equal(ann.mask(cat, 2), polygon(square2))
    assert np.array_equal(ann.mask(cat, 1), polygon("4,4;12,4;12,12;4,12"))  # halfway
    assert ann.mask(cat, 3) is None  # outside
    assert ann.mask(dog, 0) is None and all(np.array_equal(ann.mask(dog, f), blob) for f in (1, 2, 3))  # repeated
    assert main(["check-data", "--ann", str(out), "--frames", str(src / "images")]) == 0


def test_cvat_polygon_interpolation_follows_cvat_for_different_point_counts() -> None:
    # a triangle to a square: CVAT matches points by arc length and moves them linearly
    points = interpolate_polygon([0, 0, 10, 0, 0, 10], [0, 0, 10, 0, 10, 10, 0, 10], 0.5)
    assert len(points) % 2 == 0 and len(points) >= 6
    assert interpolate_polygon([0, 0, 10, 0, 10, 10, 0, 10], [2, 2, 12, 2, 12, 12, 2, 12], 0.5) == \
        [1.0, 1.0, 11.0, 1.0, 11.0, 11.0, 1.0, 11.0]


def test_cvat_bad_mask_and_broken_xml(tmp_path: Path, capsys) -> None:
    src = tmp_path / "cvat"
    write_frames(src / "images", 2)
    xml = src / "annotations.xml"
    xml.write_text(cvat_xml('<track id="7" label="dog"><mask frame="1" outside="0" keyframe="1" rle="3,4,5" '
                            'left="0" top="0" width="4" height="4"/></track>', frames=2))
    code, _, err = run(capsys, "import-data", "cvat", str(src), "--out", str(tmp_path / "a.json"))
    assert code == 2 and f"{xml}: track 7 frame 1: mask runs cover 12 pixels, not its 4x4 box" in err
    xml.write_text("<annotations><track></annotations>")
    code, _, err = run(capsys, "import-data", "cvat", str(xml), "--out", str(tmp_path / "a.json"))
    assert code == 2 and f"{xml}: broken XML at line 1" in err and not (tmp_path / "a.json").exists()


# --------------------------------------------------------------------------------------------------- coco


def test_coco_images_become_one_frame_videos(tmp_path: Path, capsys) -> None:
    write_frames(tmp_path / "img", 2)
    cat = box(2, 12, 2, 12)  # the dog polygon below overlaps it
    uncompressed = {"size": [H, W], "counts": runs(box(20, 24, 0, 32).ravel(order="F"))}  # COCO: column-major
    data = {"images": [{"id": 5, "file_name": "img/00000.jpg", "height": H, "width": W},
                       {"id": 9, "file_name": "img/00001.jpg", "height": H, "width": W}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "iscrowd": 0, "segmentation": encode(cat)},
                            {"id": 2, "image_id": 5, "category_id": 7, "iscrowd": 0,
                             "segmentation": [[6, 6, 20, 6, 20, 20, 6, 20]]},
                            {"id": 3, "image_id": 9, "category_id": 7, "iscrowd": 1, "segmentation": uncompressed}]}
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps(data))
    out = tmp_path / "ann.json"
    code, stdout, _ = run(capsys, "import-data", "coco", str(coco), "--out", str(out))
    assert code == 0 and "2 videos, 2 frames, 2 tracks (+1 crowd), 2 classes" in stdout
    ann = load_annotations(out)
    assert {c.id: c.name for c in ann.categories} == {3: "cat", 7: "dog"}
    first, second, crowd = ann.tracks
    assert np.array_equal(ann.mask(first, 0), cat) and crowd.iscrowd
    assert np.array_equal(ann.mask(crowd, 0), box(20, 24, 0, 32))
    poly = mask_utils.decode(mask_utils.frPyObjects([[6, 6, 20, 6, 20, 20, 6, 20]], H, W))[..., 0]
    assert np.array_equal(ann.mask(second, 0), poly) and (ann.mask(second, 0) & cat).any()
    assert main(["check-data", "--ann", str(out), "--frames", str(tmp_path)]) == 0
    data["annotations"][0]["category_id"] = 4
    coco.write_text(json.dumps(data))
    code, _, err = run(capsys, "import-data", "coco", str(coco), "--out", str(out))
    assert code == 2 and f"{coco}: annotations[0]: category_id 4 has no name in 'categories'" in err


# ------------------------------------------------------------------------------------------ export results


def test_export_results_overlaps_by_score_threshold_and_bad_results(tmp_path: Path, capsys) -> None:
    ann, frames = ytvis_dataset(tmp_path)
    low, high = box(0, 12, 0, 12), box(6, 18, 6, 18)
    results = [{"video_id": 1, "score": 0.3, "category_id": 1, "segmentations": [encode(low)] * 4},
               {"video_id": 1, "score": 0.9, "category_id": 2, "segmentations": [encode(high), None, None, None]},
               {"video_id": 2, "score": 0.05, "category_id": 2, "segmentations": [encode(high)] * 4}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "pred"
    code, stdout, err = run(capsys, "export-data", "ytvos", str(path), "--ann", str(ann), "--out", str(out),
                            "--score-thresh", "0.1")
    assert code == 0 and "2 videos, 8 frames, 2 objects" in stdout and "overlap in 1 frames" in err
    values = np.array(Image.open(out / "Annotations" / "a" / "00000.png"))
    assert values[10, 10] == 2 and values[2, 2] == 1  # the higher score wins the overlap
    assert not np.array(Image.open(out / "Annotations" / "b" / "00000.png")).any()  # below the threshold
    meta = json.loads((out / "meta.json").read_text())
    assert meta["videos"]["a"]["objects"]["2"] == {"category": "dog", "frames": ["00000"]}
    code, stdout, _ = run(capsys, "export-data", "mots", str(path), "--out", str(tmp_path / "bare"))  # no --ann
    assert code == 0 and sorted(p.name for p in (tmp_path / "bare" / "instances_txt").iterdir()) == \
        ["video1.txt", "video2.txt"]
    code, _, _ = run(capsys, "export-data", "ytvos", str(path), "--out", str(tmp_path / "one"), "--frames",
                     str(frames / "a"))  # results of several videos need --ann
    assert code == 2 and not (tmp_path / "one").exists()
    old = (out / "meta.json").read_bytes()
    results[1]["segmentations"][0] = {"size": [H, W + 1], "counts": encode(np.zeros((H, W + 1), np.uint8))["counts"]}
    path.write_text(json.dumps(results))
    code, _, err = run(capsys, "export-data", "mots", str(path), "--ann", str(ann), "--out", str(out))
    assert code == 2 and f"{path}: result 1: mask size differs from video a's 32x24" in err
    assert (out / "meta.json").read_bytes() == old  # the previous export is still there, untouched
