"""Tiny models and data shared by the engine tests (module level so ranks can unpickle them)."""

import torch
import torch.nn.functional as F


class MLP(torch.nn.Module):
    def __init__(self, d_in=8, hidden=16, d_out=4, n_hidden=3):
        super().__init__()
        layers = [torch.nn.Linear(d_in, hidden)]
        layers += [torch.nn.Linear(hidden, hidden) for _ in range(n_hidden - 1)]
        self.layers = torch.nn.ModuleList(layers)
        self.head = torch.nn.Linear(hidden, d_out)

    def forward(self, x, y=None):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        out = self.head(x)
        return out if y is None else F.mse_loss(out.float(), y.float())


def batch(step: int, rank: int, n: int = 4, d_in: int = 8, d_out: int = 4):
    g = torch.Generator().manual_seed(10_000 * step + rank)
    return torch.randn(n, d_in, generator=g), torch.randn(n, d_out, generator=g)


def model(seed: int = 0, **kw) -> MLP:
    torch.manual_seed(seed)
    return MLP(**kw)


def flat_params(m: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1) for p in m.parameters()])
