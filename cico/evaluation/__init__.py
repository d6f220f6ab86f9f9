"""Evaluation: the official YouTube-VIS video mask AP/AR, reproduced exactly."""
