"""Margin heads, Partial FC and distillation losses."""
