"""Per-clip time of ``detect`` at 384x640 (T = 3, N = 15345 anchors per frame, 40 classes) with the
top-300 candidate limit active, for both mask heads, on CPU (or ``--device cuda``).

Synthetic head outputs: 400 anchors above the score threshold (so top-300 cuts), boxes of 5-30% of
the image, prototypes at 96x160. Prints one JSON line: median / min milliseconds per clip, detections.
Usage: ``python benchmarks/detect_speed.py [--repeats N] [--threads N] [--device cpu|cuda]``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cico.model.detect import detect
from cico.model.outputs import HeadOutputs

T, N, C, H4, W4, CONFIDENT = 3, 15345, 40, 96, 160, 400


def synthetic_head(mask_dim: int, proto_dim: int, seed: int = 0) -> HeadOutputs:
    g = torch.Generator().manual_seed(seed)
    conf = torch.full((T, N, C), -6.0)
    which = torch.randperm(T * N, generator=g)[:CONFIDENT]
    classes = torch.randint(0, C, (CONFIDENT,), generator=g)
    conf.view(T * N, C)[which, classes] = 1.0 + torch.rand(CONFIDENT, generator=g)
    priors = torch.cat([0.1 + 0.8 * torch.rand(N, 2, generator=g), 0.05 + 0.25 * torch.rand(N, 2, generator=g)], 1)
    return HeadOutputs(
        loc=0.3 * torch.randn(T, N, 4 * T, generator=g),
        conf=conf,
        centerness=0.6 + 0.4 * torch.rand(T, N, 1, generator=g),
        mask_coeff=torch.tanh(torch.randn(T, N, mask_dim, generator=g)),
        track=torch.nn.functional.normalize(torch.randn(T, N, 64, generator=g), dim=-1),
        priors=priors,
        prior_levels=torch.zeros(N),
        proto=torch.relu(torch.randn(1, H4, W4, T, proto_dim, generator=g)),
    )


def time_detect(
    head: HeadOutputs, mask_head: str, repeats: int, device: torch.device
) -> tuple[list[float], int]:
    head = HeadOutputs(**{k: v.to(device) for k, v in vars(head).items()})
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    detect(head, classifier="sigmoid", mask_head=mask_head)  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        (dets,) = detect(head, classifier="sigmoid", mask_head=mask_head)
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return times, len(dets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {"benchmark": "detect_speed", "input": [384, 640], "T": T, "anchors_per_frame": N,
              "candidates": 300, "threads": args.threads, "device": str(device)}
    for mask_head, mask_dim, proto_dim in (("yolact", 32, 32), ("condinst", 161, 8)):
        times, count = time_detect(synthetic_head(mask_dim, proto_dim), mask_head, args.repeats, device)
        result[f"{mask_head}_ms_median"] = round(statistics.median(times), 1)
        result[f"{mask_head}_ms_min"] = round(min(times), 1)
        result[f"{mask_head}_detections"] = count
    print(json.dumps(result))


if __name__ == "__main__":
    main()
