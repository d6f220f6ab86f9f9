"""Outputs: YouTube-VIS results files, CodaLab submissions, rendering."""
