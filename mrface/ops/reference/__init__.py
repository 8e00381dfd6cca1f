"""Plain-PyTorch references of every mrface op, written for clarity, not speed."""
