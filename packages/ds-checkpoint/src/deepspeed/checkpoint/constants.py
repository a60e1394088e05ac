"""``deepspeed.checkpoint.constants`` (DeepSpeed's module): the file names of DeepSpeed's
checkpoint layout, which ds-core's engine and ds-zero write, and the common state-dict keys."""

# files: <dir>/<tag>/mp_rank_00_model_states.pt, zero_pp_rank_<r>_mp_rank_00_optim_states.pt, ...
MODEL_FILE_PREFIX = "mp_rank_"
MODEL_FILE_SUFFIX = "_model_states.pt"
OPTIM_FILE_SUFFIX = "_optim_states.pt"
ZERO_FILE_PREFIX = "zero_pp_rank_"
BF16_ZERO_FILE_PREFIX = "bf16_" + ZERO_FILE_PREFIX
FP16_ZERO_FILE_PREFIX = "fp16_" + ZERO_FILE_PREFIX
LAYER_FILE_PREFIX = "layer_"

# keys
OPTIMIZER_STATE_DICT = "optimizer_state_dict"
FP32_GROUPS = "fp32_groups"
BASE_OPTIMIZER_STATE = "base_optimizer_state"
SINGLE_PARTITION_OF_FP32_GROUPS = "single_partition_of_fp32_groups"
PARAM_GROUPS = "param_groups"
PARAM = "param"
FP32_FLAT_GROUPS = "fp32_flat_groups"
PARAM_SHAPES = "param_shapes"
BUFFER_NAMES = "buffer_names"
FROZEN_PARAM_SHAPES = "frozen_param_shapes"
FROZEN_PARAM_FRAGMENTS = "frozen_param_fragments"
ZERO_STAGE = "zero_stage"
PARTITION_COUNT = "partition_count"
LOSS_SCALER = "loss_scaler"
CLIP_GRAD = "clip_grad"
DS_VERSION = "ds_version"
