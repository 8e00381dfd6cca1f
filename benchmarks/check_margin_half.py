"""Accuracy check of the half-precision Triton margin softmax at the shape where its float16 backward
failed on an H100 (257 x 10007 x 512: d embeddings relative error 1.5), with the backward's inner loop
over D slices software-pipelined as before (``--stages none``: the autotune config's num_stages) and
not pipelined (``1``: the fix), each autotune configuration forced in turn.

Per row: the relative error of the loss and of d embeddings / d weight against the float64 ground truth,
next to the materialising reference run in the same dtype, and ``ok`` = fused error <= reference error
+ the tolerance of the GPU test (1e-3 float16, 1e-2 bfloat16). A row with ``ok`` false for ``none`` and
true for ``1`` confirms the root cause named in kernels/margin_softmax.py. Not a timing: an evidence check
the GPU suite runs (``mrface bench gpu``); on the CPU it runs a tiny float16 case under TRITON_INTERPRET=1.

    MRFACE_MARGIN_TRITON_HALF=1 python benchmarks/check_margin_half.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

TOL = {"float16": 1e-3, "bfloat16": 1e-2}


def loss_and_grads(fn, margin, weight, emb, labels, dtype, **kw):
    m = copy.deepcopy(margin)
    x = emb.detach().to(dtype).clone().requires_grad_(True)
    w = weight.detach().to(dtype).clone().requires_grad_(True)
    loss = fn(x, w, labels, m, **kw)
    loss.backward()
    return loss.detach().double(), x.grad.double(), w.grad.double()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default=None, help="B,C,D (default 257,10007,512 on CUDA, 9,40,24 on CPU)")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=list(TOL), help="CPU: float16 only")
    parser.add_argument("--margins", nargs="+", default=["arcface", "adaface"])
    parser.add_argument("--stages", nargs="+", default=["none", "1"], help="backward inner-loop stages to try")
    parser.add_argument(
        "--configs",
        choices=["autotune", "each"],
        default="each",
        help="autotune: the tuned choice only; each: every autotune config forced in turn",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cpu = args.device == "cpu"
    if cpu:  # the interpreter must be on before triton is imported
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ["MRFACE_MARGIN_TRITON_HALF"] = "1"

    from common import print_table, write_json

    import mrface.kernels.margin_softmax as tk
    from mrface.losses import get_margin, margin_softmax_loss
    from mrface.ops import use_backend
    from mrface.ops.reference.margin_softmax import margin_softmax_loss_reference, sample_margin_inputs

    b, c, d = (int(v) for v in (args.shape or ("9,40,24" if cpu else "257,10007,512")).split(","))
    dtypes = args.dtypes or (["float16"] if cpu else ["float16", "bfloat16"])
    configs = [None] if args.configs == "autotune" or cpu else tk._CONFIGS
    weight, emb, labels = sample_margin_inputs(b, c, d, seed=c, device=args.device)
    weight, emb = weight.float().double(), emb.float().double()
    rows = []
    for name in args.margins:
        margin = get_margin(name).to(args.device)
        truth = loss_and_grads(
            margin_softmax_loss_reference, copy.deepcopy(margin).double(), weight, emb, labels, torch.float64
        )
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            base = loss_and_grads(margin_softmax_loss_reference, margin, weight, emb, labels, dtype, gemm_dtype=dtype)
            base_err = [abs(float(base[0] - truth[0]))] + [rel(g, t) for g, t in zip(base[1:], truth[1:], strict=True)]
            for stages in args.stages:
                for config in configs:
                    tk.BWD_INNER_STAGES = None if stages == "none" else int(stages)
                    tk._FORCED_CONFIG = config
                    row = {
                        "B": b,
                        "C": c,
                        "D": d,
                        "margin": name,
                        "dtype": dtype_name,
                        "bwd_inner_stages": stages,
                        "config": "autotune"
                        if config is None
                        else "x".join(map(str, config.kwargs.values())) + f"/w{config.num_warps}s{config.num_stages}",
                    }
                    try:
                        with use_backend("triton"):
                            got = loss_and_grads(margin_softmax_loss, margin, weight, emb, labels, dtype)
                    except Exception as err:  # a compile error is a result here
                        rows.append(row | {"note": f"failed: {type(err).__name__}: {err}"[:160]})
                        continue
                    err = [abs(float(got[0] - truth[0]))] + [rel(g, t) for g, t in zip(got[1:], truth[1:], strict=True)]
                    ok = all(e <= be + TOL[dtype_name] for e, be in zip(err, base_err, strict=True))
                    rows.append(
                        row
                        | {
                            "loss_err": err[0],
                            "emb_rel_err": err[1],
                            "weight_rel_err": err[2],
                            "ref_emb_rel_err": base_err[1],
                            "ref_weight_rel_err": base_err[2],
                            "ok": ok,
                        }
                    )
                    print_table(rows[-1:], list(rows[-1]))
    tk.BWD_INNER_STAGES, tk._FORCED_CONFIG = 1, None
    print()
    print_table(
        rows,
        [
            "margin",
            "dtype",
            "bwd_inner_stages",
            "config",
            "loss_err",
            "emb_rel_err",
            "ref_emb_rel_err",
            "weight_rel_err",
            "ref_weight_rel_err",
            "ok",
            "note",
        ],
    )
    write_json("margin_half_check", rows, args.out, {"device": args.device, "interpreted": cpu})
    if not all(r.get("ok") for r in rows if r["bwd_inner_stages"] == "1"):
        sys.exit("the non-pipelined backward (the default) failed the accuracy check")


if __name__ == "__main__":
    main()
