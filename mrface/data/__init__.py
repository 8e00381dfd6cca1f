"""Datasets and formats: RecordIO, verification .bin, protocols, SynthFace."""
