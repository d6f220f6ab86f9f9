"""Reading, validating and writing YouTube-VIS/OVIS annotation files (real DAVIS and OVIS excerpts included)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import SHARED

from cico.data.annotations import (
    annotation_problems,
    annotations_to_dict,
    load_annotations,
    parse_annotations,
    save_annotations,
)
from cico.data.rle import encode
from cico.errors import CicoError

DAVIS = SHARED / "data" / "davis2016_mini"
OVIS = SHARED / "data" / "ovis_annotation_sample" / "annotations_train.json"


def _tiny() -> dict[str, Any]:
    """Two 3-frame videos of 8x10; categories with non-contiguous ids; one polygon track, one RLE track."""
    mask = np.zeros((8, 10), np.uint8)
    mask[2:5, 3:7] = 1
    return {
        "info": {"description": "tiny"},
        "videos": [
            {"id": 11, "width": 10, "height": 8, "length": 3, "file_names": ["a/0.jpg", "a/1.jpg", "a/2.jpg"],
             "name": "a"},
            {"id": 12, "width": 10, "height": 8, "length": 3, "file_names": ["b/0.jpg", "b/1.jpg", "b/2.jpg"]},
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 10, "name": "ten"}],
        "annotations": [
            {"id": 5, "video_id": 11, "category_id": 10, "iscrowd": 0,
             "segmentations": [[[1, 1, 6, 1, 6, 5, 1, 5]], None, []]},
            {"id": 6, "video_id": 12, "category_id": 3, "iscrowd": 0,
             "segmentations": [encode(mask), None, encode(mask)],
             "bboxes": [[3, 2, 4, 3], None, [3, 2, 4, 3]], "areas": [12, None, 12]},
        ],
    }


def _write(tmp_path: Path, data: Any, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_davis_masks_equal_the_png_annotations() -> None:
    ann = load_annotations(DAVIS / "instances.json")
    assert [v.length for v in ann.videos] == [50, 40, 52, 60, 49, 90]
    assert ann.class_names == ("person", "dog", "car", "bird") and ann.has_gt
    dog = next(v for v in ann.videos if v.file_names[0].startswith("dog/"))
    (track,) = ann.tracks_of(dog.id)
    assert ann.class_names[ann.label_of(track.category_id) - 1] == "dog"
    for frame in (0, 10, 59):
        png = cv2.imread(str(DAVIS / "Annotations" / "dog" / f"{frame:05d}.png"), cv2.IMREAD_GRAYSCALE)
        mask = ann.mask(track, frame)
        assert mask is not None and mask.shape == (480, 854)
        np.testing.assert_array_equal(mask, (png > 127).astype(np.uint8))
        assert mask.sum() == track.areas[frame]
        assert track.has_valid_box(frame)


def test_ovis_excerpt_compressed_rle_and_occlusion() -> None:
    ann = load_annotations(OVIS)
    assert ann.num_classes == 25 and ann.class_names[18] == "Fish"
    assert len(ann.tracks) == 10 and all(t.category_id == 19 and ann.label_of(19) == 19 for t in ann.tracks)
    track = ann.tracks[0]
    assert track.occlusion == ["no_occlusion"] * 3
    mask = ann.mask(track, 1)
    x, y, w, h = track.bboxes[1]
    assert mask.shape == (886, 1920) and track.areas[1] == w * h  # OVIS stores box areas
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (x, y, w, h)


def test_arbitrary_category_ids_map_to_contiguous_labels_and_back() -> None:
    ann = parse_annotations(_tiny())
    assert ann.category_ids == (3, 7, 10) and ann.class_names == ("three", "seven", "ten")
    assert [ann.label_of(c) for c in (3, 7, 10)] == [1, 2, 3]
    assert [ann.category_id_of(label) for label in (1, 2, 3)] == [3, 7, 10]
    with pytest.raises(ValueError):
        ann.category_id_of(4)


def test_polygons_and_missing_boxes_areas_are_derived_from_masks() -> None:
    ann = parse_annotations(_tiny())
    poly = ann.tracks_of(11)[0]
    mask = ann.mask(poly, 0)
    assert mask.shape == (8, 10) and mask.sum() == poly.areas[0] > 0
    assert poly.bboxes[1] is None and poly.areas[2] is None and ann.mask(poly, 2) is None
    ys, xs = np.nonzero(mask)
    assert poly.bboxes[0] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    data = _tiny()
    ann = parse_annotations(copy.deepcopy(data))
    save_annotations(ann, tmp_path / "out" / "copy.json")
    again = load_annotations(tmp_path / "out" / "copy.json")
    assert annotations_to_dict(again) == annotations_to_dict(ann)
    written = json.loads((tmp_path / "out" / "copy.json").read_text())
    assert written["info"] == data["info"] and written["videos"][0]["name"] == "a"
    assert [c["id"] for c in written["categories"]] == [7, 3, 10]  # file ids and order kept
    assert [t["category_id"] for t in written["annotations"]] == [10, 3]
    assert written["annotations"][1]["segmentations"] == data["annotations"][1]["segmentations"]
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_test_split_without_annotations(tmp_path: Path) -> None:
    data = _tiny()
    del data["annotations"]
    ann = load_annotations(_write(tmp_path, data))
    assert not ann.has_gt and ann.tracks == [] and ann.tracks_of(11) == []
    assert "annotations" not in annotations_to_dict(ann)


def _broken(change) -> dict[str, Any]:
    data = _tiny()
    change(data)
    return data


@pytest.mark.parametrize("data, message", [
    ([1, 2], "top level is a list"),
    ({"annotations": []}, "missing 'videos'"),
    (_broken(lambda d: d["videos"][1].update(id=11)), "video 11: duplicate video id"),
    (_broken(lambda d: d["videos"][0].update(length=4)), "'length' is 4 but 'file_names' has 3"),
    (_broken(lambda d: d["videos"][0].update(height=0)), "positive integers"),
    (_broken(lambda d: d["categories"].append({"id": 3, "name": "again"})), "duplicate category id"),
    (_broken(lambda d: d["annotations"][0].update(category_id=99)), "category_id 99 is not in 'categories'"),
    (_broken(lambda d: d["annotations"][0].update(video_id=42)), "video_id 42 is not in 'videos'"),
    (_broken(lambda d: d["annotations"][1].update(id=5)), "annotation 5: duplicate annotation id"),
    (_broken(lambda d: d["annotations"][1]["bboxes"].pop()), "'bboxes' has 2 entries but the video has 3"),
    (_broken(lambda d: d["annotations"][0]["segmentations"].append(None)), "'segmentations' has 4 entries"),
    (_broken(lambda d: d["annotations"][1]["segmentations"][2].update(size=[8, 11])),
     "frame 2: mask size 8x11 but the video is 8x10"),
    (_broken(lambda d: d["annotations"][0]["segmentations"].__setitem__(0, [[1, 2, 3, 4]])), "polygon with 4"),
    (_broken(lambda d: d["annotations"][1]["segmentations"].__setitem__(0, {"counts": [1, 2], "size": [8, 10]})),
     "counts cover 3 pixels"),
    (_broken(lambda d: d["annotations"][1]["bboxes"].__setitem__(0, [1, 2, 3])), "bbox [1, 2, 3] is not"),
    (_broken(lambda d: d["annotations"][1].pop("segmentations")), "missing 'segmentations'"),
])
def test_schema_problems_are_one_line_cico_errors_naming_the_file(tmp_path: Path, data: Any, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(CicoError) as err:
        load_annotations(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_all_problems_are_listed() -> None:
    data = _tiny()
    data["annotations"][0]["category_id"] = 1
    data["annotations"][1]["areas"] = [1]
    problems = annotation_problems(data)
    assert len(problems) == 2 and "category_id 1" in problems[0] and "'areas' has 1" in problems[1]
    with pytest.raises(CicoError, match="and 1 more problems"):
        parse_annotations(data)


def test_broken_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"videos": [')
    with pytest.raises(CicoError, match=r"broken\.json: broken JSON: .* line 1"):
        load_annotations(path)
    with pytest.raises(CicoError, match="nope.json: file not found"):
        load_annotations(tmp_path / "nope.json")
