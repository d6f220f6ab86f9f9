"""Peak memory of streaming video prediction: a 300-frame vs a 3000-frame 360x640 video.

Protocol:
* Videos: H.264 mp4 files written with PyAV from simple moving shapes (``cico.commands.benchmark.moving_shapes``:
  two discs and a square drifting over a gradient), 360x640, 30 fps.
* Model: the ``tiny_yolact`` preset (ResNet-18, 192x320 input, T = 3), randomly initialised with seed 0 and
  its class bias raised from the focal prior to ``--conf-bias`` (-2.5) so that every clip has tens of
  detections and the tracker really links (random weights: this measures memory, not accuracy); or
  ``--weights`` for a trained checkpoint.
* Each video runs in a fresh Python process through ``cico.outputs.writer.predict_to_dir`` with the
  ``cico predict`` defaults (T = 3, overlap 1, reference linking): PyAV decoding, preprocessing, network and
  detection, linking, masks back at 360x640, RLE encoding and results.json. The child reports its peak
  resident set size (``ru_maxrss``).

Prints one JSON line: peak RSS (MB) of both runs and their ratio (target <= 1.1), seconds, tracks.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = (360, 640)


def child(args: argparse.Namespace) -> None:
    import torch

    from cico.data.sources import VideoFile
    from cico.inference.link import LinkConfig
    from cico.inference.predictor import VideoPredictor
    from cico.model.checkpoint import load_model
    from cico.model.network import build_model
    from cico.outputs.writer import predict_to_dir

    torch.set_num_threads(args.threads)
    if args.weights:
        model = load_model(args.weights)
    else:
        torch.manual_seed(0)
        model = build_model("tiny_yolact").eval()
        with torch.no_grad():
            model.head.conf_layer.bias.fill_(args.conf_bias)
    predictor = VideoPredictor(model, link=LinkConfig(retire_after=args.retire_after))
    start = time.perf_counter()
    summary = predict_to_dir(predictor, [VideoFile(args.video)], args.out, progress=False)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": summary.frames, "tracks": summary.tracks, "seconds": round(seconds, 1),
                      "peak_rss_mb": round(peak_mb, 1), "tracker_rows": len(predictor.tracker.state or [])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs=2, default=(300, 3000))
    parser.add_argument("--weights", default=None, help="a cico checkpoint instead of the random tiny model")
    parser.add_argument("--conf-bias", type=float, default=-2.5)
    parser.add_argument("--retire-after", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from cico.commands.benchmark import write_moving_shapes

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames:
            video = write_moving_shapes(Path(tmp) / f"shapes_{frames}.mp4", frames, SIZE)
            command = [sys.executable, __file__, "--child", "--video", str(video),
                       "--out", str(Path(tmp) / f"out_{frames}"), "--conf-bias", str(args.conf_bias),
                       "--threads", str(args.threads)]
            if args.weights:
                command += ["--weights", args.weights]
            if args.retire_after is not None:
                command += ["--retire-after", str(args.retire_after)]
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(json.dumps({
        "model": args.weights or f"tiny_yolact random init, class bias {args.conf_bias}",
        "video_size": list(SIZE), "clip_frames": 3, "overlap": 1, "retire_after": args.retire_after,
        "threads": args.threads, "frames": [r["frames"] for r in runs],
        "peak_rss_mb": [r["peak_rss_mb"] for r in runs],
        "ratio": round(runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
        "seconds": [r["seconds"] for r in runs], "tracks": [r["tracks"] for r in runs],
        "tracker_rows": [r["tracker_rows"] for r in runs],
    }))


if __name__ == "__main__":
    main()
