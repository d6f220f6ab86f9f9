"""Data: YouTube-VIS/OVIS annotations, dataset catalogue, synthetic videos, training clips, frame sources."""
