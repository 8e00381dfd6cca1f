"""Chunked pure-PyTorch paths of the ops (backend ``chunked``): no (B, C)-sized intermediate, any device."""
