"""ALST on a Hugging Face model: ``UlyssesSPAttentionHF.register_with_transformers`` on a tiny
``LlamaForCausalLM`` (built from a config, random init, SDPA attention, GQA) with SP=2 on 2 gloo
ranks gives the logits, loss and gradients of the same model on the full sequence (fp32, 1e-5
relative); bad arguments refused. transformers comes from this package's ``test`` extra."""

import torch

from deepspeed.testing.distributed import run_distributed

REL = 1e-5
SEQ = 12


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).float()


def _hf_parity():
    import torch.nn.functional as F

    import deepspeed.comm as dist
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
    from deepspeed.sequence.loss import sequence_parallel_mean_loss

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _model()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 64, (1, SEQ), generator=g)
    labels = tokens.clone()
    labels[0, 1:4] = -100  # uneven padding: fewer valid tokens on rank 0
    positions = torch.arange(SEQ).view(1, SEQ)
    shift = F.pad(labels, (0, 1), value=-100)[:, 1:]
    ref = model(input_ids=tokens, position_ids=positions).logits
    ref_loss = F.cross_entropy(ref.view(-1, 64), shift.view(-1), ignore_index=-100)
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    out = {}
    try:
        UlyssesSPAttentionHF.register_with_transformers(model, "eager", 2, 1)
    except ValueError as e:
        out["mismatch"] = str(e)
    mpu = UlyssesSPAttentionHF.register_with_transformers(model, "sdpa", 2, 1, seq_length_is_variable=True)
    out["sp"] = (mpu.get_sequence_parallel_world_size(), mpu.get_sequence_parallel_rank())
    n = SEQ // world
    sl = slice(rank * n, (rank + 1) * n)
    logits = model(input_ids=tokens[:, sl], position_ids=positions[:, sl]).logits
    local_shift = shift[:, sl]
    local = F.cross_entropy(logits.view(-1, 64), local_shift.reshape(-1), ignore_index=-100)
    loss = sequence_parallel_mean_loss(local, int((local_shift != -100).sum()), mpu.get_sequence_parallel_group())
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        gr = p.grad.clone()
        dist.all_reduce(gr)
        grads[name] = gr / world
    out["logits"] = _rel(logits.detach(), ref.detach()[:, sl])
    out["loss"] = abs(loss.item() - ref_loss.item()) / abs(ref_loss.item())
    out["grads"] = max(_rel(grads[k], ref_grads[k]) for k in ref_grads)
    return out


def test_register_with_transformers_llama_sp2_equals_full_sequence():
    for rank, out in enumerate(run_distributed(_hf_parity, world_size=2, timeout=300)):
        assert out["sp"] == (2, rank)
        assert out["logits"] <= REL, out
        assert out["loss"] <= REL, out
        assert out["grads"] <= REL, out
        assert out["mismatch"].startswith("core_attn_implementation='eager' does not match the model config's "
                                          "attn_implementation='sdpa'")
