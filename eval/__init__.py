"""Evaluation workflows: metrics, protocols, reports (installed as mrface.eval)."""
