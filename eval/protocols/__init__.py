"""Benchmark protocols from their files, one module per protocol (IJB-B/C, IJB-C mixed resolutions,
SCface, TinyFace, QMUL-SurvFace), and ``cli`` with the ``mrface eval ijb|tinyface|scface|survface`` commands."""
