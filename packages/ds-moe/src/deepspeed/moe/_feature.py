"""The feature object ds-core finds through the ``deepspeed.features`` entry point.

Only declarations and hook dispatch live here. At ``initialize`` the MoE layers get their
expert-parallel groups (``transform_model``); with ``ep_size > 1`` their experts are declared
gradient groups (reduced over the expert-data-parallel group, norms over the expert-parallel
group); checkpoints carry one file per expert (:mod:`deepspeed.moe._checkpoint`).
"""

from deepspeed.protocols import DeepSpeedFeature, FeatureProvides, Order, SectionUse


class MoeFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "moe"
    order = Order.PARAMETER_GROUPS
    provides = FeatureProvides(
        modules=("deepspeed.moe",),
        sections={"moe": SectionUse(), "expert_parallel": SectionUse()},
        attributes={"expert_parallel_config": None},
    )

    def transform_model(self, model, config):
        """Create every MoE layer's expert-parallel groups (collectively, in module order)."""
        from deepspeed.moe import _checkpoint

        data_first = bool(getattr(config, "use_data_before_expert_parallel_", False))
        for _, layer in _checkpoint.moe_layers(model):
            layer.set_deepspeed_parallelism(data_first)
            _checkpoint.tolerate_other_layouts(layer.deepspeed_moe.experts)
        return model

    def gradient_groups(self, engine):
        """With ``ep_size > 1``: each expert group's experts, reduced over its expert-data-parallel group."""
        from deepspeed.moe import _checkpoint
        from deepspeed.protocols import GradientGroup
        from deepspeed.utils import groups

        by_name: dict = {}
        for _, layer in _checkpoint.moe_layers(engine.module):
            if layer.ep_size > 1:
                params = list(layer.deepspeed_moe.experts.parameters())  # frozen ones too: not broadcast over dp
                by_name.setdefault(layer.expert_group_name, []).extend(params)
        out = []
        for name, params in by_name.items():
            out.append(GradientGroup(tuple(params), groups._get_expert_data_parallel_group(name),
                                     groups._get_expert_parallel_group(name),
                                     groups._get_expert_broadcast_src_rank(name)))
        return out

    def checkpoint_state(self, engine):
        from deepspeed.moe import _checkpoint

        return _checkpoint.state(engine) if _checkpoint.moe_layers(engine.module) else None

    def model_states_entries(self, engine):
        """DeepSpeed's ``num_experts`` (one entry per MoE layer), which DeepSpeed's loader requires."""
        from deepspeed.moe import _checkpoint

        layers = _checkpoint.moe_layers(engine.module)
        return {"num_experts": [m.num_experts for _, m in layers]} if layers else None

    def save_checkpoint_files(self, engine, save_dir, tag):
        """``layer_<L>_expert_<E>_mp_rank_<MP>_model_states.pt`` from each expert's first data-parallel replica."""
        from deepspeed.moe import _checkpoint

        _checkpoint.save(engine, save_dir, tag)

    def load_checkpoint_state(self, engine, state, load_dir, tag, load_optimizer_states=True, load_module_only=False):
        """Every local expert from its file (any ``ep_size`` the checkpoint was saved at)."""
        from deepspeed.moe import _checkpoint

        if _checkpoint.moe_layers(engine.module):
            _checkpoint.load(engine, state, load_dir, tag)


feature = MoeFeature()
