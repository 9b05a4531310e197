"""Evaluation: objective judges of generated audio (ASR word error rate, classifiers, distances)."""
