"""Expert-parallel drift: ``ep_size=2`` vs ``ep_size=1`` on 2 gloo ranks, ZeRO stage 0, the same
tokens and initial weights; prints the largest |loss difference| over 10 steps. The same code
runs in either venv (``import deepspeed`` is this project here, ``deepspeed==0.19.8`` in the
reference venv of bench/_reference.py). The model is the tiny MoE transformer of
packages/ds-moe/tests/test_engine_moe.py (top-2 of 4 experts, capacity 1.0 with RTS, gradient
clipping 1.0); SGD with momentum, or AdamW with ``ADAM=1``.

    python bench/moe_parity.py            # ours
    .nox/_deepspeed_reference/bin/python bench/moe_parity.py
"""

import os

import torch
import torch.multiprocessing as mp

class TinyMoETransformer(torch.nn.Module):
    """Embedding, one attention block, an MoE feed-forward (4 experts, top-2), LM head."""

    def __init__(self, ep_size=1, vocab=32, d=16, drop_tokens=True):
        super().__init__()
        from deepspeed.moe.layer import MoE

        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, d)
        self.attn = torch.nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm = torch.nn.LayerNorm(d)
        expert = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, d))
        self.moe = MoE(d, expert, num_experts=4, ep_size=ep_size, k=2, capacity_factor=1.0, eval_capacity_factor=4.0,
                       min_capacity=0, drop_tokens=drop_tokens, top2_2nd_expert_sampling=False)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        out, l_aux, _ = self.moe(self.norm(h))
        return self.head(h + out), l_aux


def _batch(step, rank):
    """Learnable sequences: each row counts up by one (mod 32) from a random start."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = (torch.randint(0, 32, (4, 1), generator=g) + torch.arange(9)) % 32
    return x[:, :-1], x[:, 1:]




def run(rank, port, q):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import deepspeed
    deepspeed.init_distributed("gloo")
    out = {}
    for ep in (1, 2):
        torch.manual_seed(1234)
        model = TinyMoETransformer(ep)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3) if os.environ.get("ADAM") else torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config={
            "train_micro_batch_size_per_gpu": 4, "gradient_clipping": 1.0, "steps_per_print": 1000})
        losses = []
        for step in range(10):
            x, y = _batch(step, rank)
            logits, l_aux = engine(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 32), y.reshape(-1)) + 0.01 * l_aux
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        out[ep] = losses
    q.put((rank, out))


if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=run, args=(r, int(os.environ.get('MASTER_PORT', '29611')), q)) for r in range(2)]
    for p in ps:
        p.start()
    res = dict(q.get(timeout=400) for _ in ps)
    for p in ps:
        p.join()
    import deepspeed
    for r, out in sorted(res.items()):
        d = [abs(a - b) for a, b in zip(out[1], out[2])]
        print(f"deepspeed {deepspeed.__version__} rank {r}: max |loss(ep2) - loss(ep1)| over 10 steps = {max(d):.3g}; per step {['%.1e' % x for x in d]}")
