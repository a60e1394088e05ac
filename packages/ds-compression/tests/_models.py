"""Tiny models for the compression tests: an attention block with separate q/k/v (so heads can be
removed), an MLP, and a small convnet; a fixed random teacher gives regression targets."""

import torch
import torch.nn as nn
import torch.nn.functional as F

D, HEADS, HIDDEN = 16, 4, 32


class Attn(nn.Module):
    def __init__(self, d=D, heads=HEADS):
        super().__init__()
        self.head_dim = d // heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x):
        b, t, _ = x.shape
        # Note: the head count is read from q's width, so a model whose heads were removed by
        # redundancy_clean still runs.
        h = self.q.out_features // self.head_dim
        q, k, v = (m(x).view(b, t, h, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, h * self.head_dim))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(D)
        self.attn = Attn()
        self.fc1, self.fc2 = nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)

    def forward(self, x):
        x = x + self.attn(self.ln(x))
        return x + self.fc2(F.gelu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self, n_layer=2):
        super().__init__()
        self.emb = nn.Linear(8, D)
        self.layers = nn.ModuleList(Block() for _ in range(n_layer))
        self.head = nn.Linear(D, 4)

    def forward(self, x):
        x = self.emb(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def make(cls=Net, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(**kw)


def data(cls=Net, n=64, seed=123):
    """Inputs and the targets of a fixed random teacher of the same architecture."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 8, generator=g) if cls is Net else torch.randn(n, 3, 8, 8, generator=g)
    teacher = make(cls, seed=seed)
    with torch.no_grad():
        y = teacher.eval()(x)
    return x, y


def train(model, x, y, steps, scheduler=None, lr=3e-3):
    """Adam on the MSE to the targets; the losses of every step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 16, i * 16 + 16) % x.shape[0]
        loss = F.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


def n_params(model):
    return sum(p.numel() for p in model.parameters())
