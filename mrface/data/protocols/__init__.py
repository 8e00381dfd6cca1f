"""Benchmark protocol loaders: IJB-B/C, TinyFace, SCface, QMUL-SurvFace."""
