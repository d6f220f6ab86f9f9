"""Evaluation: the official YouTube-VIS video mask AP/AR, reproduced exactly."""
from .ytvis import STAT_NAMES, EvaluationResult, EvaluationWarning, evaluate

__all__ = ["STAT_NAMES", "EvaluationResult", "EvaluationWarning", "evaluate"]
