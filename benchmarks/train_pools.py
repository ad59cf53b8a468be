"""A/B on CUDA: the torch twin's training step (bf16 autocast, batch 8, 64x224x224, SGD) with
its max-pools as torch's max_pool3d (before) and as the separable max_pool2d pair (now), in one
process, alternating three rounds of 10 steps; both layouts. `python3 -m benchmarks.train_pools`
on the GPU machine, set up as for `make gpu-check` (README, GPU)."""
import time

import torch

import i3d_torch
from convert.checkpoints import read_weights
from i3d_torch import model as twin

def main():
    torch.backends.cudnn.benchmark = True
    w, _ = read_weights("default")
    SEP, TORCH = twin._separable_max_pool, twin._torch_max_pool
    y = torch.randint(0, 400, (8,), device="cuda")
    for fmt_name, fmt in (("channels_last_3d", torch.channels_last_3d),
                          ("contiguous", torch.contiguous_format)):
        m = i3d_torch.build(w, head="global").cuda().to(memory_format=fmt).train()
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        x = torch.rand(8, 3, 64, 224, 224, device="cuda").mul(2).sub(1).contiguous(memory_format=fmt)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
        res = {"torch max_pool3d": [], "separable max_pool2d": []}
        for _ in range(3):
            for name, f in (("torch max_pool3d", TORCH), ("separable max_pool2d", SEP)):
                twin._separable_max_pool = f
                for _warm in range(3):
                    step()
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _step in range(10):
                    step()
                torch.cuda.synchronize()
                res[name].append((time.perf_counter() - t) / 10)
        for name, ts in res.items():
            best = min(ts)
            rounds = [round(t * 1e3, 1) for t in ts]
            print(f"train bf16 {fmt_name} batch 8 64x224x224, pools as {name}: "
                  f"{8 / best:.1f} clips/s ({best * 1e3:.1f} ms/step; rounds {rounds})", flush=True)
        twin._separable_max_pool = SEP
        del m, opt


if __name__ == "__main__":
    main()
