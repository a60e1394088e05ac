"""Writes ``deepspeed_0.19.8_moe/``: an MoE checkpoint saved by DeepSpeed itself (run it with the
python of a venv holding ``deepspeed==0.19.8``, e.g. ``.nox/_deepspeed_reference/bin/python``).

One process, a tiny model (embedding, MoE with 4 experts of Linear(8,16)-GELU-Linear(16,8),
top-2, head), two SGD steps, then ``save_checkpoint``; ``expected.pt`` holds the eval-mode output
of DeepSpeed's model on a fixed input after saving. test_deepspeed_checkpoint.py loads it into
ds-moe and compares.

``--load DIR TAG LOGITS``: load a checkpoint written by ds-moe (same model) with DeepSpeed and
print the largest difference between DeepSpeed's eval output on ``tokens(99)`` and ``LOGITS``
(a tensor saved with torch.save).
"""

import os
import shutil

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "deepspeed_0.19.8_moe")


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from deepspeed.moe.layer import MoE

        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(16, 8)
        expert = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
        self.moe = MoE(8, expert, num_experts=4, ep_size=1, k=2, min_capacity=0, eval_capacity_factor=4.0,
                       top2_2nd_expert_sampling=False)
        self.head = torch.nn.Linear(8, 16)

    def forward(self, x):
        out, l_aux, _ = self.moe(self.embed(x))
        return self.head(out), l_aux


def tokens(seed):
    return torch.randint(0, 16, (4, 6), generator=torch.Generator().manual_seed(seed))


def main():
    import sys

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    import deepspeed

    deepspeed.init_distributed("gloo")
    engine, *_ = deepspeed.initialize(model=Tiny(), config={
        "train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.5}}})
    if sys.argv[1:2] == ["--load"]:
        ckpt, tag, logits = sys.argv[2:5]
        engine.load_checkpoint(ckpt, tag=tag, load_optimizer_states=False)
        engine.eval()
        with torch.no_grad():
            out = engine(tokens(99))[0]
        print("max |difference|:", (out - torch.load(logits, weights_only=True)).abs().max().item())
        return
    for step in range(2):
        x = tokens(step)
        logits, l_aux = engine(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), x.reshape(-1)) + 0.01 * l_aux
        engine.backward(loss)
        engine.step()
    shutil.rmtree(OUT, ignore_errors=True)
    engine.save_checkpoint(OUT, tag="global_step2")
    for name in os.listdir(os.path.join(OUT, "global_step2")):
        if not name.endswith(".pt"):
            os.remove(os.path.join(OUT, "global_step2", name))
    if os.path.exists(os.path.join(OUT, "zero_to_fp32.py")):
        os.remove(os.path.join(OUT, "zero_to_fp32.py"))
    engine.eval()
    with torch.no_grad():
        torch.save({"input": tokens(99), "logits": engine(tokens(99))[0], "deepspeed": deepspeed.__version__},
                   os.path.join(OUT, "expected.pt"))


if __name__ == "__main__":
    main()
