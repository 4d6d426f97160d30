"""The parameter schema: every parameter of every stage, declared once.

The CLI parsers, the web form (JSON Schema), validation, saved configurations and the command
lines the web UI launches are all derived from `StudioConfig`. Defaults are the seed document's
recommended values; flag names equal the reference trainer's (musubi-tuner).
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from ..models.configs import FULL_DIT_BLOCKS
from .rules import FILE_STEM, FILE_STEM_MAX, check_path_text, rule_error
from .spec import CACHE, ParamMeta, Stage, _SchemaExtra, meta_of, param

MAX_SWAP = FULL_DIT_BLOCKS - 1  # --blocks_to_swap: one block always stays on the GPU
MAX_VALIDATION_TIMESTEPS = 100

T = Stage.TRAIN
G = Stage.GENERATE
CL = Stage.CACHE_LATENTS
CT = Stage.CACHE_TEXT
CAP = Stage.CAPTION

ModelVersion = Literal["original", "edit", "edit-2509", "edit-2511"]
EDIT_VERSIONS: tuple[str, ...] = ("edit", "edit-2509", "edit-2511")
OPTIMIZERS = ("adamw", "adamw8bit", "lion", "sgd", "adafactor")
NETWORK_ARG_KEYS = (
    "loraplus_lr_ratio", "rank_dropout", "module_dropout", "include_patterns", "exclude_patterns", "verbose",
    "targets",
)  # fmt: skip
LORA_TARGET_SETS = ("default", "musubi")  # models/lora_keys.TARGET_SETS
ATTN_MODE_FLAGS = {"flash": "flash_attn", "xformers": "xformers"}  # --attn_mode torch / sdpa: SDPA
NETWORK_DROPOUT_ARGS = ("rank_dropout", "module_dropout")
FIELDS_ONLY = "fields_only"  # validation context key: check each field's own rules, skip the cross-field ones
_KEY_VALUE_HELP = "each item is key=value"


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    """Split ``key=value`` items, naming the flag on a malformed one."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise rule_error("rule.key_value", flag=flag, item=repr(item))
        out[key.strip()] = value.strip()
    return out


class StudioConfig(BaseModel):
    """All parameters of cache latents, cache text-encoder outputs, train and generate."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---- model paths -------------------------------------------------------------------------
    dit: str | None = param(
        None,
        ParamMeta(
            "models",
            (T, G),
            "DiT checkpoint: a ComfyUI single file (qwen_image_bf16.safetensors, qwen_image_2512_bf16.safetensors, "
            "qwen_image_edit_2511_bf16.safetensors, ...) or a diffusers folder",
            "DiT 模型路径：ComfyUI 单文件（qwen_image_bf16.safetensors、qwen_image_2512_bf16.safetensors、"
            "qwen_image_edit_2511_bf16.safetensors 等）或 diffusers 文件夹",
            required_for=(T, G),
            path="file_or_dir",
            aliases=("dit_path",),
            basic=True,
        ),
    )
    vae: str | None = param(
        None,
        ParamMeta(
            "models",
            (CL, T, G),
            "VAE checkpoint: qwen_image_vae.safetensors, diffusion_pytorch_model.safetensors or a diffusers folder",
            "VAE 模型路径：qwen_image_vae.safetensors、diffusion_pytorch_model.safetensors 或 diffusers 文件夹",
            required_for=(CL, T, G),
            path="file_or_dir",
            aliases=("vae_path",),
            basic=True,
        ),
    )
    text_encoder: str | None = param(
        None,
        ParamMeta(
            "models",
            (CT, T, G, CAP),
            "Text encoder (Qwen2.5-VL) checkpoint: qwen_2.5_vl_7b.safetensors or a diffusers folder (captioning "
            "uses it when --model_path is not given)",
            "文本编码器（Qwen2.5-VL）路径：qwen_2.5_vl_7b.safetensors 或 diffusers 文件夹（打标未给 --model_path 时使用它）",
            required_for=(CT, T, G),
            path="file_or_dir",
            aliases=("text_encoder_path",),
            basic=True,
        ),
    )
    tokenizer: str | None = param(
        None,
        ParamMeta(
            "models",
            (CT, T, G, CAP),
            "Optional tokenizer folder; by default a local copy or the built-in offline Qwen2.5-VL tokenizer",
            "可选的分词器文件夹；默认使用本地缓存或内置的离线 Qwen2.5-VL 分词器",
            path="dir",
        ),
    )
    model_version: ModelVersion = param(
        "original",
        ParamMeta(
            "models",
            (CL, CT, T, G),
            "Model variant: original (text-to-image: Qwen-Image and Qwen-Image-2512), edit, edit-2509 or edit-2511 "
            "(edit modes need control images)",
            "模型版本：original（文生图：Qwen-Image 与 Qwen-Image-2512）、edit、edit-2509、edit-2511（编辑模式需要控制图像）",
            aliases=("edit_mode",),
            basic=True,
        ),
    )

    # ---- dataset -----------------------------------------------------------------------------
    dataset_config: str | None = param(
        None,
        ParamMeta(
            "dataset",
            (CL, CT, T, CAP),
            "Dataset configuration file (TOML)",
            "数据集配置文件（TOML 格式）",
            required_for=(CL, CT, T),
            path="file",
            basic=True,
        ),
    )
    validation_dataset_config: str | None = param(
        None,
        ParamMeta(
            "dataset",
            (CL, CT, T),
            "Validation dataset configuration (a TOML like --dataset_config, with its own cache_directory): "
            "cached with the training data; training reports its loss at fixed timesteps and noise",
            "验证集配置文件（与 --dataset_config 格式相同的 TOML，需有自己的 cache_directory）：与训练数据一起缓存；"
            "训练时在固定的时间步和噪声下报告它的损失",
            path="file",
        ),
    )

    # ---- training ----------------------------------------------------------------------------
    mixed_precision: Literal["no", "fp16", "bf16"] = param(
        "bf16",
        ParamMeta(
            "training",
            (T, G),
            "Mixed precision; bf16 is recommended on modern GPUs",
            "混合精度类型；推荐 bf16（现代 GPU，节省显存且保持精度）",
            basic=True,
        ),
    )
    timestep_sampling: Literal["sigma", "uniform", "sigmoid", "shift", "qwen_shift", "logsnr"] = param(
        "shift",
        ParamMeta(
            "training",
            (T,),
            "Timestep sampling; shift is the official recommendation (sigma: the reference trainer's "
            "default, a step of its 1000-step schedule, shaped by weighting_scheme logit_normal or mode)",
            "时间步采样策略；推荐 shift（官方推荐，提升训练效果）（sigma：参考训练器的默认值，"
            "从其 1000 步调度中取一步，可由 weighting_scheme logit_normal 或 mode 调整分布）",
        ),
    )
    discrete_flow_shift: float = param(
        2.2,
        ParamMeta(
            "training",
            (T,),
            "Discrete flow shift for timestep_sampling=shift (2.2 is the tuned value)",
            "离散流偏移参数（shift 采样时使用；2.2 为官方调优的最佳值）",
            recommended=(1.0, 5.0),
        ),
        gt=0.0,
    )
    weighting_scheme: Literal["none", "sigma_sqrt", "logit_normal", "mode", "cosmap"] = param(
        "none",
        ParamMeta(
            "training",
            (T,),
            "Loss weighting scheme; none suits most cases (logit_normal and mode shape only "
            "timestep_sampling sigma, as in the reference trainer)",
            "损失权重方案；推荐 none（适合大多数场景）（logit_normal 和 mode 只作用于 sigma 采样，与参考训练器相同）",
        ),
    )
    sigmoid_scale: float = param(
        1.0,
        ParamMeta(
            "advanced",
            (T,),
            "Scale of the normal draw for sigmoid and shift timestep sampling",
            "sigmoid / shift 时间步采样的正态分布缩放系数",
        ),
        gt=0.0,
        le=10.0,
    )
    logit_mean: float = param(
        0.0,
        ParamMeta(
            "advanced",
            (T,),
            "Mean of the logit-normal draw (weighting_scheme logit_normal; logsnr sampling)",
            "logit_normal 权重方案 / logsnr 采样的均值",
        ),
        ge=-10.0,
        le=10.0,
    )
    logit_std: float = param(
        1.0,
        ParamMeta(
            "advanced",
            (T,),
            "Standard deviation of the logit-normal draw",
            "logit_normal 权重方案 / logsnr 采样的标准差",
        ),
        gt=0.0,
        le=10.0,
    )
    mode_scale: float = param(
        1.29,
        ParamMeta("advanced", (T,), "Scale for weighting_scheme mode", "mode 权重方案的缩放系数"),
        ge=0.0,
        le=10.0,
    )
    min_timestep: int = param(
        0,
        ParamMeta(
            "advanced",
            (T,),
            "Lowest timestep sampled (0-999, in units of 1/1000)",
            "最小采样时间步（0-999，单位 1/1000）",
        ),
        ge=0,
        le=999,
    )
    max_timestep: int = param(
        1000,
        ParamMeta(
            "advanced",
            (T,),
            "Highest timestep sampled (1-1000, in units of 1/1000)",
            "最大采样时间步（1-1000，单位 1/1000）",
        ),
        ge=1,
        le=1000,
    )
    optimizer_type: str = param(
        "adamw8bit",
        ParamMeta(
            "training",
            (T,),
            "Optimizer: adamw, adamw8bit (saves memory), lion, sgd, adafactor, or a module.Class path",
            "优化器类型：adamw、adamw8bit（8 位 AdamW，显著节省显存）、lion、sgd、adafactor 或 模块.类名",
            choices=OPTIMIZERS,
        ),
    )
    optimizer_args: list[str] = param(
        [],
        ParamMeta(
            "advanced",
            (T,),
            f"Extra optimizer arguments, {_KEY_VALUE_HELP} (e.g. weight_decay=0.01)",
            "优化器额外参数，每项为 key=value（例如 weight_decay=0.01）",
        ),
    )
    learning_rate: float = param(
        5e-5,
        ParamMeta(
            "training",
            (T,),
            "Learning rate (5e-5 balances speed and stability; adaptive optimizers such as Prodigy "
            "or D-Adaptation take 1.0)",
            "学习率（推荐 5e-5，平衡训练速度和稳定性；Prodigy、D-Adaptation 等自适应优化器用 1.0）",
            basic=True,
            recommended=(1e-6, 1e-3),
        ),
        gt=0.0,
    )
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = param("constant", ParamMeta("training", (T,), "Learning-rate schedule", "学习率调度器"))
    lr_warmup_steps: float = param(
        0,
        ParamMeta(
            "training",
            (T,),
            "Warm-up steps; a value below 1 is a fraction of the total steps",
            "学习率预热步数；小于 1 时表示占总步数的比例",
        ),
        ge=0,
        le=100000,
    )
    lr_scheduler_num_cycles: int = param(
        1,
        ParamMeta("advanced", (T,), "Cycles for cosine_with_restarts", "cosine_with_restarts 的周期数"),
        ge=1,
        le=100,
    )
    lr_scheduler_power: float = param(
        1.0,
        ParamMeta("advanced", (T,), "Power for the polynomial schedule", "polynomial 调度器的幂次"),
        gt=0.0,
        le=10.0,
    )
    max_train_epochs: int = param(
        8,
        ParamMeta(
            "training",
            (T,),
            "Number of epochs (raise it for small datasets)",
            "最大训练轮数（数据少时可提高）",
            basic=True,
            recommended=(1, 100),
        ),
        ge=1,
    )
    max_train_steps: int | None = param(
        None,
        ParamMeta(
            "training",
            (T,),
            "Stop after this many optimizer steps; when set it takes precedence over max_train_epochs",
            "最大训练步数；设置后优先于 max_train_epochs",
        ),
        ge=1,
        le=10_000_000,
    )
    gradient_accumulation_steps: int = param(
        1,
        ParamMeta("training", (T,), "Batches accumulated per optimizer step", "梯度累积步数"),
        ge=1,
        le=1024,
    )
    max_grad_norm: float = param(
        1.0,
        ParamMeta("training", (T,), "Gradient clipping norm (0 disables)", "梯度裁剪范数（0 表示关闭）"),
        ge=0.0,
        le=1000.0,
    )
    ema_decay: float | None = param(
        None,
        ParamMeta(
            "training",
            (T,),
            "Keep an exponential moving average of the LoRA weights with this decay (e.g. 0.999) and save it "
            "beside each LoRA file as NAME-ema.safetensors (0 copies the plain weights; empty: off)",
            "以此衰减系数（如 0.999）保持 LoRA 权重的指数移动平均（EMA），并在每个 LoRA 文件旁保存为 "
            "NAME-ema.safetensors（0 等于普通权重；留空表示关闭）",
        ),
        ge=0.0,
        lt=1.0,
    )
    ema_on_cpu: bool = param(
        False,
        ParamMeta(
            "training",
            (T,),
            "Hold the EMA copy in CPU memory instead of on the GPU (saves its size in VRAM; slower steps)",
            "把 EMA 副本放在 CPU 内存而非 GPU（节省相应显存；每步稍慢）",
        ),
    )
    ema_for_eval: bool = param(
        False,
        ParamMeta(
            "training",
            (T,),
            "Sample images and compute the validation loss with the EMA weights instead of the plain ones",
            "生成样例图和计算验证损失时使用 EMA 权重而非普通权重",
        ),
    )
    seed: int = param(
        42,
        ParamMeta(
            "training",
            (T, G),
            "Random seed (makes runs reproducible)",
            "随机种子（确保结果可复现）",
            also=("generation",),
        ),
        ge=0,
        le=2147483647,
    )
    validate_every_n_steps: int | None = param(
        None,
        ParamMeta(
            "training",
            (T,),
            "Compute the validation loss every N steps (it is also computed at every LoRA save)",
            "每 N 步计算一次验证损失（每次保存 LoRA 时也会计算）",
        ),
        ge=1,
        le=10_000_000,
    )
    validate_every_n_epochs: int | None = param(
        None,
        ParamMeta(
            "training",
            (T,),
            "Compute the validation loss every N epochs (it is also computed at every LoRA save)",
            "每 N 轮计算一次验证损失（每次保存 LoRA 时也会计算）",
        ),
        ge=1,
        le=100,
    )
    validation_timesteps: list[float] = param(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        ParamMeta(
            "training",
            (T,),
            "Timesteps (above 0, below 1) at which the validation loss is computed, each with fixed noise",
            "计算验证损失的时间步（大于 0 且小于 1），每个时间步使用固定的噪声",
            extra={"x-metavar": "T"},
        ),
    )
    validation_seed: int = param(
        0,
        ParamMeta(
            "training",
            (T,),
            "Seed of the validation noise (every evaluation uses the same noise)",
            "验证噪声的随机种子（每次评估使用相同的噪声）",
        ),
        ge=0,
        le=2147483647,
    )

    # ---- network -----------------------------------------------------------------------------
    network_module: Literal["networks.lora_qwen_image"] = param(
        "networks.lora_qwen_image", ParamMeta("network", (T,), "Network module (fixed)", "网络模块（固定值）")
    )
    network_dim: int = param(
        8,
        ParamMeta(
            "network",
            (T,),
            "LoRA rank (8-16 balances size and expressiveness)",
            "LoRA 维度（推荐 8-16，平衡模型大小和表现力）",
            basic=True,
            recommended=(4, 256),
        ),
        ge=1,
    )
    network_alpha: float = param(
        1.0,
        ParamMeta(
            "network",
            (T,),
            "LoRA alpha; the update is scaled by alpha / rank",
            "LoRA alpha；缩放系数为 alpha / 维度",
            basic=True,
        ),
        gt=0.0,
        le=1024.0,
    )
    network_dropout: float | None = param(
        None,
        ParamMeta(
            "network",
            (T,),
            "Dropout on the LoRA down-projection output (0-1)",
            "LoRA 降维输出的 dropout（0-1）",
        ),
        ge=0.0,
        lt=1.0,
    )
    network_args: list[str] = param(
        ["loraplus_lr_ratio=4"],
        ParamMeta(
            "network",
            (T,),
            f"Extra network arguments, {_KEY_VALUE_HELP}: loraplus_lr_ratio, rank_dropout, module_dropout, "
            "include_patterns, exclude_patterns, targets (default = the 12 attention/MLP linears of each "
            "block; musubi = also img_mod.1 and txt_mod.1, the reference trainer's 14)",
            "网络额外参数，每项为 key=value：loraplus_lr_ratio（LoRA A/B 矩阵学习率比例）、rank_dropout"
            "（按秩随机丢弃）、module_dropout（按模块随机跳过）、include_patterns、exclude_patterns、targets"
            "（default = 每块 12 个注意力/MLP 线性层；musubi = 另加 img_mod.1 和 txt_mod.1，即参考训练器的 14 个）",
        ),
    )
    network_weights: str | None = param(
        None,
        ParamMeta("network", (T,), "Start from these LoRA weights", "从已有 LoRA 权重继续训练", path="file"),
    )

    # ---- memory and speed --------------------------------------------------------------------
    sdpa: bool = param(
        True, ParamMeta("memory", (T, G), "Use PyTorch scaled-dot-product attention", "启用 SDPA 注意力优化")
    )
    gradient_checkpointing: bool = param(
        True,
        ParamMeta(
            "memory",
            (T,),
            "Recompute activations in the backward pass to save memory",
            "梯度检查点（节省显存）",
            basic=True,
        ),
    )
    persistent_data_loader_workers: bool = param(
        True,
        ParamMeta("memory", (T,), "Keep data-loader workers alive between epochs", "持久化数据加载器进程"),
    )
    max_data_loader_n_workers: int = param(
        2, ParamMeta("advanced", (T,), "Data-loader worker processes", "数据加载器进程数"), ge=0, le=64
    )
    fp8_base: bool = param(
        False,
        ParamMeta(
            "memory",
            (T, G),
            "Store the DiT weights in fp8 (recommended for 12-24 GB GPUs)",
            "DiT 以 FP8 存储（12GB 显卡推荐）",
            basic=True,
        ),
    )
    fp8_scaled: bool = param(
        False,
        ParamMeta(
            "memory",
            (T, G),
            "Scaled fp8 (block-wise scales, better quality); needs fp8_base",
            "FP8 缩放量化（分块缩放，精度更好）；需要同时启用 fp8_base",
            needs="fp8_base",
        ),
    )
    fp8_matmul: Literal["auto", "native", "upcast"] = param(
        "auto",
        ParamMeta(
            "memory",
            (T, G),
            "How fp8 DiT weights multiply: native = fp8 tensor cores (inputs quantised per token; "
            "GPUs with compute capability 8.9+), upcast = weights upcast to bf16 per matmul as the "
            "reference trainer does; auto = native where the GPU supports it",
            "FP8 权重的矩阵乘法方式：native = FP8 张量核心（输入按 token 量化；需算力 8.9+ 显卡），"
            "upcast = 每次乘法前将权重转为 bf16（与参考训练器相同）；auto = 显卡支持时用 native",
        ),
    )
    fp8_vl: bool = param(
        False,
        ParamMeta(
            "memory",
            (CT, T, G, CAP),
            "Text encoder in fp8 (recommended for GPUs under 16 GB)",
            "文本编码器使用 FP8（推荐 <16GB 显卡使用）",
        ),
    )
    blocks_to_swap: int = param(
        0,
        ParamMeta(
            "memory",
            (T, G),
            f"DiT blocks kept in CPU memory and swapped in when used (0-{MAX_SWAP}; 64 GB RAM advised)",
            f"交换到内存的 DiT 块数（0-{MAX_SWAP}；推荐 64GB 主内存）",
            basic=True,
        ),
        ge=0,
        le=MAX_SWAP,
    )
    gradient_checkpointing_cpu_offload: bool = param(
        False,
        ParamMeta(
            "memory",
            (T,),
            "Keep the block inputs saved by gradient checkpointing in CPU memory (about 1.5 GB "
            "less GPU memory at 1024x1024; needs gradient_checkpointing)",
            "梯度检查点保存的各块输入放在内存（CPU）中（1024x1024 时约省 1.5GB 显存；需要启用梯度检查点）",
            needs="gradient_checkpointing",
        ),
    )
    flash_attn: bool = param(
        False,
        ParamMeta(
            "memory",
            (T, G),
            "Use flash-attention 2 instead of SDPA (needs the flash-attn package and a CUDA GPU)",
            "使用 FlashAttention 2 代替 SDPA（需要安装 flash-attn 且使用 CUDA 显卡）",
        ),
    )
    flash3: bool = param(
        False,
        ParamMeta(
            "memory",
            (T, G),
            "Use flash-attention 3 instead of SDPA (Hopper GPUs; needs its package)",
            "使用 FlashAttention 3 代替 SDPA（Hopper 架构显卡；需要安装对应包）",
        ),
    )
    xformers: bool = param(
        False,
        ParamMeta(
            "memory",
            (T, G),
            "Use xformers attention instead of SDPA (needs the xformers package and a CUDA GPU)",
            "使用 xformers 注意力代替 SDPA（需要安装 xformers 且使用 CUDA 显卡）",
        ),
    )
    compile: bool = param(
        False,
        ParamMeta(
            "memory",
            (T, G),
            "Compile each DiT block with torch.compile: ~35 s before the first step, then 20-50 % faster "
            "steps (measured on an H100); falls back to uncompiled blocks if compiling fails",
            "用 torch.compile 编译每个 DiT 块：首步前约 35 秒，之后每步快 20-50%（H100 实测）；编译失败时自动退回未编译模式",
        ),
    )

    # ---- logging and output ------------------------------------------------------------------
    output_dir: str | None = param(
        None,
        ParamMeta(
            "logging",
            (T,),
            "Folder for LoRA files",
            "输出目录",
            required_for=(T,),
            path="out_dir",
            basic=True,
        ),
    )
    output_name: str | None = param(
        None,
        ParamMeta(
            "logging",
            (T,),
            "File-name prefix of the LoRA files",
            "输出文件名前缀",
            required_for=(T,),
            basic=True,
        ),
    )
    logging_dir: str | None = param(
        "./logs", ParamMeta("logging", (T,), "TensorBoard log folder", "日志目录", path="out_dir")
    )
    log_with: Literal["tensorboard", "none"] = param(
        "tensorboard", ParamMeta("logging", (T,), "Logging tool", "日志工具")
    )
    save_every_n_epochs: int | None = param(
        1,
        ParamMeta(
            "logging", (T,), "Save a LoRA every N epochs", "每 N 轮保存一次", basic=True, recommended=(1, 10)
        ),
        ge=1,
    )
    save_every_n_steps: int | None = param(
        None, ParamMeta("logging", (T,), "Save a LoRA every N steps", "每 N 步保存一次"), ge=1, le=10_000_000
    )
    save_precision: Literal["float", "fp16", "bf16"] = param(
        "bf16", ParamMeta("logging", (T,), "Precision of the saved LoRA", "保存 LoRA 的精度")
    )
    save_state: bool = param(
        False,
        ParamMeta(
            "logging",
            (T,),
            "Also save optimizer/scheduler/RNG state for resuming",
            "同时保存训练状态以便恢复",
        ),
    )
    resume: str | None = param(
        None,
        ParamMeta("logging", (T,), "Resume from a saved state folder", "从保存的训练状态恢复", path="dir"),
    )

    # ---- samples -----------------------------------------------------------------------------
    sample_prompts: str | None = param(
        None,
        ParamMeta(
            "samples",
            (T,),
            "Prompt file for sample images (one prompt per line, --w --h --s --d --l --n --ci options)",
            "采样提示词文件（每行一个提示词，可带 --w --h --s --d --l --n --ci 选项）",
            path="file",
            basic=True,
        ),
    )
    sample_every_n_epochs: int | None = param(
        None,
        ParamMeta("samples", (T,), "Generate samples every N epochs", "每 N 轮生成样例图", basic=True),
        ge=1,
        le=100,
    )
    sample_every_n_steps: int | None = param(
        None,
        ParamMeta("samples", (T,), "Generate samples every N steps", "每 N 步生成样例图"),
        ge=1,
        le=10_000_000,
    )
    sample_at_first: bool = param(
        False, ParamMeta("samples", (T,), "Generate samples before training starts", "训练开始前先生成样例图")
    )

    # ---- generation (qwen-image-studio generate; flags as musubi-tuner's qwen_image_generate_image.py) --
    prompt: str | None = param(
        None,
        ParamMeta(
            "generation",
            (G, CAP),
            "Prompt of the image to generate (or --from_file); captioning command: your own instruction for the "
            "VLM instead of the --caption_template's (\\n for a new line; the web UI's captioning uses the template)",
            "生成图像的提示词（或使用 --from_file）；打标命令：代替 --caption_template 模板、给 VLM 的自定义指令"
            "（\\n 表示换行；网页界面的打标使用模板）",
            basic=True,
        ),
    )
    from_file: str | None = param(
        None,
        ParamMeta(
            "samples",
            (G,),
            "Prompt file for generation: one prompt per line with --w --h --s --d --l --n --ci options",
            "生成用提示词文件：每行一个提示词，可带 --w --h --s --d --l --n --ci 选项",
            path="file",
            cli_only=True,
        ),
    )
    negative_prompt: str | None = param(
        None,
        ParamMeta(
            "generation",
            (G,),
            "Negative prompt (used when guidance_scale is above 1)",
            "负面提示词（guidance_scale 大于 1 时使用）",
            basic=True,
        ),
    )
    image_size: list[int] = param(
        [1024, 1024],
        ParamMeta(
            "generation",
            (G,),
            "Image height and width in pixels (multiples of 16)",
            "图像的高和宽（像素，16 的倍数）",
            extra={"x-metavar": "H W"},
            basic=True,
        ),
    )
    infer_steps: int = param(
        25, ParamMeta("generation", (G,), "Denoising steps per image", "每张图像的去噪步数", basic=True), ge=2, le=1000
    )
    guidance_scale: float = param(
        4.0,
        ParamMeta(
            "generation",
            (G,),
            "Classifier-free guidance scale (true CFG with the negative prompt); 1 turns it off",
            "无分类器引导系数（与负面提示词一起使用）；1 表示关闭",
            basic=True,
        ),
        ge=1.0,
        le=30.0,
    )
    control_image_path: list[str] = param(
        [],
        ParamMeta(
            "generation",
            (G,),
            "Control image(s) for the edit model versions (several for edit-2509 / edit-2511)",
            "编辑模式的控制图像（edit-2509 / edit-2511 可给多张）",
            extra={"x-metavar": "PATH"},
            path="file",
            basic=True,
        ),
    )
    lora_weight: list[str] = param(
        [],
        ParamMeta(
            "generation",
            (G,),
            "LoRA file(s) to apply: ComfyUI/kohya (lora_unet_), diffusers or PEFT form",
            "要加载的 LoRA 文件：ComfyUI/kohya（lora_unet_）、diffusers 或 PEFT 格式",
            extra={"x-metavar": "PATH"},
            path="file",
            basic=True,
        ),
    )
    lora_multiplier: list[float] = param(
        [],
        ParamMeta(
            "generation",
            (G,),
            "Strength of each LoRA (one value applies to all; default 1.0)",
            "每个 LoRA 的强度（只给一个值时用于全部；默认 1.0）",
            extra={"x-metavar": "FLOAT"},
            basic=True,
        ),
    )
    grid_loras: list[str] = param(
        [],
        ParamMeta(
            "generation",
            (G,),
            "Compare grid: one column per LoRA file (e.g. every epoch of a run), all at the same seed; rows are "
            "the --grid_strengths, or else the prompts; the grid is saved as one labelled PNG beside the cells",
            "对比网格：每个 LoRA 文件一列（例如一次训练的每个轮次），种子相同；行为 --grid_strengths，未给时为各提示词；"
            "网格保存为一张带标注的 PNG，与各单元格图像放在一起",
            extra={"x-metavar": "PATH"},
            path="file",
        ),
    )
    grid_strengths: list[float] = param(
        [],
        ParamMeta(
            "generation",
            (G,),
            "Compare grid: one row per LoRA strength (with --grid_loras)",
            "对比网格：每个 LoRA 强度一行（与 --grid_loras 一起使用）",
            extra={"x-metavar": "FLOAT"},
        ),
    )
    save_path: str | None = param(
        None,
        ParamMeta(
            "generation",
            (G,),
            "Folder for the generated PNG images",
            "生成图像（PNG）的保存目录",
            required_for=(G,),
            path="out_dir",
        ),
    )

    save_merged_model: str | None = param(
        None,
        ParamMeta(
            "samples",
            (G,),
            "Instead of generating, write the DiT with the --lora_weight files merged in to this "
            ".safetensors file (ComfyUI layout, bf16, or fp16 with --mixed_precision fp16; the model is "
            "merged on the CPU)",
            "不生成图像，而是把 --lora_weight 的 LoRA 合并进 DiT 并保存到此 .safetensors 文件"
            "（ComfyUI 格式，bf16；--mixed_precision fp16 时为 fp16；在 CPU 上合并）",
            extra={"x-metavar": "PATH"},
            cli_only=True,
        ),
    )

    # ---- generation: the rest of musubi-tuner's qwen_image_generate_image.py flags -----------------
    output_type: Literal["images", "latent", "latent_images"] = param(
        "images",
        ParamMeta(
            "samples",
            (G,),
            "What generation writes: images (PNG), latent (the denoised latent as a .safetensors file, "
            "key 'latent', 1x16x1xH/8xW/8, as the reference trainer writes it) or latent_images (both)",
            "生成输出：images（PNG 图像）、latent（去噪后的 latent，保存为 .safetensors，键名 latent，"
            "与参考训练器相同）或 latent_images（两者都保存）",
            cli_only=True,
        ),
    )
    latent_path: list[str] = param(
        [],
        ParamMeta(
            "samples",
            (G,),
            "Decode these latent files (written with --output_type latent) to PNG images with the VAE; "
            "nothing is generated",
            "用 VAE 把这些 latent 文件（--output_type latent 生成）解码为 PNG 图像；不进行生成",
            extra={"x-metavar": "PATH"},
            cli_only=True,
        ),
    )
    no_metadata: bool = param(
        False,
        ParamMeta(
            "samples",
            (G,),
            "Write images and latent files without the prompt and settings in their metadata",
            "保存图像和 latent 文件时不写入提示词与参数元数据",
            cli_only=True,
        ),
    )
    append_original_name: bool = param(
        False,
        ParamMeta(
            "samples",
            (G,),
            "Edit mode: end each file name with the first control image's name (decoding: the latent file's)",
            "编辑模式：在输出文件名末尾加上第一张控制图像的文件名（解码时为 latent 文件名）",
            cli_only=True,
        ),
    )
    flow_shift: float | None = param(
        None,
        ParamMeta(
            "generation",
            (G,),
            "Fixed shift of the flow-matching schedule; by default the shift follows the image size "
            "(dynamic shifting, as the official pipeline)",
            "流匹配调度的固定偏移；默认按图像尺寸动态偏移（与官方管线相同）",
        ),
        gt=0.0,
        le=100.0,
    )
    embedded_cfg_scale: float = param(
        2.5,
        ParamMeta(
            "samples",
            (G,),
            "Accepted for reference command lines; Qwen-Image has no embedded (distilled) guidance, so it "
            "only goes into the latent file's metadata, as in the reference",
            "为兼容参考训练器命令行而接受；Qwen-Image 没有内嵌（蒸馏）引导，仅写入 latent 文件元数据（与参考相同）",
            cli_only=True,
        ),
        ge=0.0,
        le=100.0,
    )
    lora_include_patterns: list[str] = param(
        [],
        ParamMeta(
            "generation",
            (G,),
            "Merge only the LoRA modules whose names (lora_unet_...) match one of these regular expressions",
            "只合并名称（lora_unet_...）与这些正则表达式之一匹配的 LoRA 模块",
            flag="include_patterns",
            extra={"x-metavar": "REGEX"},
        ),
    )
    lora_exclude_patterns: list[str] = param(
        [],
        ParamMeta(
            "generation",
            (G,),
            "Leave out the LoRA modules whose names (lora_unet_...) match one of these regular expressions",
            "不合并名称（lora_unet_...）与这些正则表达式之一匹配的 LoRA 模块",
            flag="exclude_patterns",
            extra={"x-metavar": "REGEX"},
        ),
    )
    num_layers: int | None = param(
        None,
        ParamMeta(
            "models",
            (G,),
            "Number of DiT blocks; it is read from the --dit file, and a different value is refused",
            "DiT 块数；从 --dit 文件读取，给出不同的值会报错",
            cli_only=True,
        ),
        ge=1,
        le=1000,
    )
    attn_mode: Literal["torch", "sdpa", "flash", "xformers"] | None = param(
        None,
        ParamMeta(
            "memory",
            (G,),
            "Attention kernel as the reference's generation script names it: torch or sdpa = PyTorch SDPA, "
            "flash = --flash_attn, xformers = --xformers (sageattn is not supported)",
            "参考训练器生成脚本的注意力写法：torch 或 sdpa = PyTorch SDPA，flash = --flash_attn，"
            "xformers = --xformers（不支持 sageattn）",
            cli_only=True,
        ),
    )
    text_encoder_cpu: bool = param(
        False,
        ParamMeta(
            "memory",
            (G,),
            "Encode the prompts with the text encoder on the CPU (for GPUs under 16 GB)",
            "在 CPU 上运行文本编码器编码提示词（适合 16GB 以下显卡）",
            cli_only=True,
        ),
    )
    vae_enable_tiling: bool = param(
        False,
        ParamMeta(
            "memory",
            (G,),
            "Decode images with the VAE in tiles (less memory for large images)",
            "VAE 分块解码（大图像时节省显存）",
            cli_only=True,
        ),
    )
    use_pinned_memory_for_block_swap: bool = param(
        False,
        ParamMeta(
            "memory",
            (G,),
            "Accepted for reference command lines; no effect: --blocks_to_swap always keeps the swapped "
            "blocks in pinned memory on a CUDA GPU",
            "为兼容参考训练器命令行而接受；无效果：--blocks_to_swap 在 CUDA 显卡上总是使用锁页内存",
            cli_only=True,
        ),
    )
    disable_numpy_memmap: bool = param(
        False,
        ParamMeta(
            "memory",
            (G,),
            "Accepted for reference command lines; no effect: model files are read with safetensors",
            "为兼容参考训练器命令行而接受；无效果：模型文件用 safetensors 读取",
            cli_only=True,
        ),
    )
    bell: bool = param(
        False,
        ParamMeta("samples", (G,), "Ring the terminal bell when generation ends", "生成结束时响铃提示", cli_only=True),
    )
    control_text_encoder_size: Literal["official", "reference"] = param(
        "official",
        ParamMeta(
            "advanced",
            (CT, T, G),
            "Edit modes: the size of a control image for the text encoder. official = as diffusers' and "
            "the official pipelines (edit: 1024x1024 area, 2509/2511: 384x384 area, sides rounded to 32); "
            "reference = as musubi-tuner (every version: 384x384 area, bucket sides multiples of 16, "
            "centre-cropped), to match a LoRA trained there",
            "编辑模式：控制图像送入文本编码器的尺寸。official = 与 diffusers 和官方管线相同（edit：1024x1024 面积，"
            "2509/2511：384x384 面积，边长取 32 的倍数）；reference = 与 musubi-tuner 相同（所有版本 384x384 面积，"
            "边长取 16 的倍数并居中裁剪），用于匹配在参考训练器中训练的 LoRA",
        ),
    )
    resize_control_to_official_size: bool = param(
        False,
        ParamMeta(
            "advanced",
            (CT, T, G),
            "Accepted for reference command lines; no effect: control images are always sized as the "
            "official pipeline does (the VAE sees 1024x1024 area; the text encoder: --control_text_encoder_size)",
            "为兼容参考训练器命令行而接受；无效果：控制图像总是按官方管线的尺寸处理"
            "（VAE 为 1024x1024 面积；文本编码器见 --control_text_encoder_size）",
        ),
    )

    # ---- caching -----------------------------------------------------------------------------
    cache_batch_size: int | None = param(
        None,
        ParamMeta(
            "caching",
            (*CACHE, CAP),
            "Batch size while caching (default: the dataset's batch size) or captioning (default: 1)",
            "缓存时的批处理大小（默认使用数据集的 batch_size）；打标时的批处理大小（默认 1）",
            flag="batch_size",
        ),
        ge=1,
        le=1024,
    )
    skip_existing: bool = param(
        False,
        ParamMeta(
            "caching", CACHE, "Skip items whose cache files already exist", "跳过已存在的缓存文件", basic=True
        ),
    )
    keep_cache: bool = param(
        False,
        ParamMeta(
            "caching",
            CACHE,
            "Keep cache files that no longer belong to the dataset",
            "保留数据集中已不存在条目的缓存",
        ),
    )
    device: str | None = param(
        None,
        ParamMeta(
            "caching",
            (*CACHE, G, CAP),
            "Device for caching, generation and captioning, e.g. cuda, cuda:1 or cpu (default: cuda when available)",
            "缓存、生成和打标使用的设备，如 cuda、cuda:1、cpu（默认有 GPU 时用 cuda）",
            basic=True,
        ),
        pattern=r"^(cpu|cuda(:\d+)?|mps)$",
    )

    # ---- captioning (caption_images_by_qwen_vl.py; flags as the reference's caption script) ---------
    image_dir: str | None = param(
        None,
        ParamMeta(
            "dataset",
            (CAP,),
            "Captioning: the folder of images to caption (or --dataset_config for every image of a dataset)",
            "打标：要生成描述的图像文件夹（或用 --dataset_config 为数据集的全部图像打标）",
            path="dir",
            cli_only=True,  # the web UI captions the form's dataset TOML
        ),
    )
    caption_model: str | None = param(
        None,
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning: the Qwen2.5-VL file, the text encoder's qwen_2.5_vl_7b.safetensors (it holds lm_head "
            "and the vision tower) or a text_encoder folder (default: --text_encoder, the same file)",
            "打标：Qwen2.5-VL 模型，即文本编码器 qwen_2.5_vl_7b.safetensors（含 lm_head 和视觉塔）或 text_encoder 文件夹"
            "（默认使用 --text_encoder，同一个文件）",
            flag="model_path",
            path="file_or_dir",
        ),
    )
    output_file: str | None = param(
        None,
        ParamMeta(
            "dataset",
            (CAP,),
            "Captioning --image_dir: the JSON-lines file to write (needed for --output_format jsonl)",
            "打标 --image_dir：要写入的 JSONL 文件（--output_format jsonl 时必需）",
            path="out_file",
            cli_only=True,
        ),
    )
    output_format: Literal["jsonl", "text"] = param(
        "jsonl",
        ParamMeta(
            "dataset",
            (CAP,),
            "Captioning --image_dir: jsonl = one {image_path, caption} line per image in --output_file; "
            "text = IMAGE.txt beside each image",
            "打标 --image_dir：jsonl = 每张图像一行 {image_path, caption} 写入 --output_file；text = 每张图像旁写 IMAGE.txt",
            cli_only=True,
        ),
    )
    max_new_tokens: int = param(
        1024,
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning: at most this many tokens per caption",
            "打标：每条描述最多生成的 token 数",
        ),
        ge=1,
        le=32768,
    )
    max_size: int = param(
        1280,
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning: the VLM sees each image within a max_size x max_size area (aspect ratio kept, sides "
            "multiples of 28, at least a 256x256 area); smaller is faster and uses less memory",
            "打标：每张图像缩放到 max_size x max_size 面积以内（保持宽高比，边长为 28 的倍数，至少 256x256 面积）；"
            "越小越快、越省显存",
        ),
        ge=280,  # the smallest square of 28-pixel sides over the 256x256 area
        le=3584,
    )
    caption_template: Literal["detailed", "short", "tags", "style_neutral"] = param(
        "detailed",
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning: the prompt template when --prompt is not given: detailed description, short "
            "sentence, comma-separated tags, or style_neutral (content only, no style words)",
            "打标：未给 --prompt 时使用的提示模板：detailed（详细描述）、short（一句话）、tags（逗号分隔标签）、"
            "style_neutral（只描述内容，不提风格）",
            basic=True,
        ),
    )
    edit_pairs: bool = param(
        False,
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning an edit dataset (--dataset_config): the VLM sees the control image(s) and the target "
            "and writes the instruction that turns one into the other, as the target's caption",
            "为编辑数据集打标（--dataset_config）：VLM 看控制图像和目标图像，写出把前者变成后者的编辑指令，作为目标图像的描述",
            basic=True,
        ),
    )
    overwrite_captions: bool = param(
        False,
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning: replace existing captions (by default an image that has a caption keeps it)",
            "打标：覆盖已有描述（默认已有描述的图像保持不变）",
            flag="overwrite",
            basic=True,
        ),
    )
    trigger_word: str | None = param(
        None,
        ParamMeta(
            "captioning",
            (CAP,),
            'Captioning: put this word in front of every caption written ("word, caption")',
            '打标：在每条写入的描述前加上此触发词（"触发词, 描述"）',
            basic=True,
        ),
    )

    caption_history: str | None = param(
        None,
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning --dataset_config: record the previous text of every caption replaced in this history "
            "file (SQLite), as one change that can be undone (the web UI passes its workspace's)",
            "打标 --dataset_config：把被替换描述的原文记录到此历史文件（SQLite），作为一次可撤销的修改（网页界面传入其工作区的文件）",
            path="out_file",
            cli_only=True,
        ),
    )
    preview_count: int | None = param(
        None,
        ParamMeta(
            "captioning",
            (CAP,),
            "Captioning preview: caption only the first N images that would be captioned and write nothing "
            "(the captions are logged and announced as events)",
            "打标预览：只为将要打标的前 N 张图像生成描述，不写入任何文件（描述写入日志并作为事件报告）",
            flag="preview",
            cli_only=True,
        ),
        ge=1,
        le=50,
    )

    # ---- field rules ---------------------------------------------------------------------------
    @field_validator("*")
    @classmethod
    def _passable(cls, v: object, info: ValidationInfo) -> object:
        """Text must fit a command line (no NUL byte); a path must be one the OS can open (length limits)."""
        items = v if isinstance(v, list) else [v]
        texts = [item for item in items if isinstance(item, str)]
        if any("\x00" in text for text in texts):
            raise rule_error("rule.nul")
        field = cls.model_fields.get(info.field_name or "")
        extra = field.json_schema_extra if field is not None else None
        if isinstance(extra, _SchemaExtra) and extra.meta.path:
            for text in texts:
                check_path_text(text)
        return v

    @field_validator("output_name")
    @classmethod
    def _output_name(cls, v: str | None) -> str | None:
        if v is not None and not FILE_STEM.fullmatch(v):
            raise rule_error("rule.file_stem", value=repr(v), limit=FILE_STEM_MAX)
        return v

    @field_validator("optimizer_type")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        name = v.strip()
        if name.lower() in OPTIMIZERS:
            return name.lower()
        parts = name.split(".")
        if len(parts) >= 2 and all(p.isidentifier() for p in parts):
            return name
        raise rule_error("rule.one_of_or_class", choices=", ".join(OPTIMIZERS), value=repr(v))

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: list[int]) -> list[int]:
        if len(v) != 2:
            raise rule_error("rule.two_numbers", count=len(v))
        if any(x < 16 or x > 8192 or x % 16 for x in v):
            raise rule_error("rule.multiple_of_16", height=v[0], width=v[1])
        return v

    @field_validator("validation_timesteps")
    @classmethod
    def _validation_timesteps(cls, v: list[float]) -> list[float]:
        if not 1 <= len(v) <= MAX_VALIDATION_TIMESTEPS or any(not 0 < x < 1 for x in v):
            raise rule_error("rule.validation_timesteps", value=" ".join(f"{x:g}" for x in v) or "none")
        return v

    @field_validator("optimizer_args")
    @classmethod
    def _optimizer_args(cls, v: list[str]) -> list[str]:
        _key_values(v, "--optimizer_args")
        return v

    @field_validator("network_args")
    @classmethod
    def _network_args(cls, v: list[str]) -> list[str]:
        for key, value in _key_values(v, "--network_args").items():
            if key not in NETWORK_ARG_KEYS:
                raise rule_error("rule.unknown_key", key=repr(key), keys=", ".join(NETWORK_ARG_KEYS))
            if key == "loraplus_lr_ratio":
                try:
                    ratio = float(value)
                except ValueError:
                    ratio = -1.0
                if not 0 < ratio <= 64:
                    raise rule_error("rule.lora_ratio", value=repr(value))
            if key == "targets" and value not in LORA_TARGET_SETS:
                raise rule_error("rule.lora_targets", value=repr(value), choices=", ".join(LORA_TARGET_SETS))
            if key in NETWORK_DROPOUT_ARGS:
                try:
                    rate = float(value)
                except ValueError:
                    rate = -1.0
                if not 0 <= rate < 1:
                    raise rule_error("rule.dropout_rate", key=key, value=repr(value))
        return v

    # ---- cross-field rules ---------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _attn_mode(cls, data: object) -> object:
        """--attn_mode flash / xformers (the reference's spelling) turns on --flash_attn / --xformers."""
        if isinstance(data, dict):
            flag = ATTN_MODE_FLAGS.get(str(data.get("attn_mode")))
            if flag:
                data = {**data, flag: True}
        return data

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> StudioConfig:
        if (info.context or {}).get(FIELDS_ONLY):  # see `params.validate.lenient_config`
            return self
        for name, needed in switch_needs().items():
            if getattr(self, name) and not getattr(self, needed):
                fields = type(self).model_fields
                flag, other = (meta_of(fields[n], n).flag for n in (name, needed))
                raise rule_error("rule.needs", flag=f"--{flag}", other=f"--{other}")
        kernels = [f"--{k}" for k in ("flash_attn", "flash3", "xformers") if getattr(self, k)]
        if len(kernels) > 1:
            if len(kernels) == 3:
                raise rule_error(
                    "rule.one_kernel_of_three", first=kernels[0], second=kernels[1], third=kernels[2]
                )
            raise rule_error("rule.one_kernel", first=kernels[0], second=kernels[1])
        if self.min_timestep >= self.max_timestep:
            raise rule_error(
                "rule.below", flag="--min_timestep", value=self.min_timestep, other="--max_timestep",
                other_value=self.max_timestep,
            )  # fmt: skip
        if (
            self.max_train_steps is None
            and self.save_every_n_epochs is not None
            and self.save_every_n_epochs > self.max_train_epochs
        ):
            raise rule_error(
                "rule.at_most", flag="--save_every_n_epochs", value=self.save_every_n_epochs,
                other="--max_train_epochs", other_value=self.max_train_epochs,
            )  # fmt: skip
        if (
            self.sample_every_n_epochs or self.sample_every_n_steps or self.sample_at_first
        ) and not self.sample_prompts:
            raise rule_error(
                "rule.need_three", first="--sample_every_n_epochs", second="--sample_every_n_steps",
                third="--sample_at_first", other="--sample_prompts",
            )  # fmt: skip
        if self.lora_multiplier and len(self.lora_multiplier) not in (1, len(self.lora_weight)):
            raise rule_error(
                "rule.per_file", flag="--lora_multiplier", count=len(self.lora_multiplier),
                files=len(self.lora_weight), other="--lora_weight",
            )  # fmt: skip
        if self.prompt and self.from_file:
            raise rule_error("rule.not_both", first="--prompt", second="--from_file")
        if self.log_with == "tensorboard" and not self.logging_dir:
            raise rule_error("rule.needs", flag="--log_with tensorboard", other="--logging_dir")
        for name in ("validate_every_n_steps", "validate_every_n_epochs"):
            if getattr(self, name) and not self.validation_dataset_config:
                raise rule_error("rule.needs", flag=f"--{name}", other="--validation_dataset_config")
        for name in ("ema_on_cpu", "ema_for_eval"):  # (--ema_decay 0 is on: not a switch_needs pair)
            if getattr(self, name) and self.ema_decay is None:
                raise rule_error("rule.needs", flag=f"--{name}", other="--ema_decay")
        return self

    @property
    def is_edit(self) -> bool:
        """Whether the model version is one of the edit variants."""
        return self.model_version in EDIT_VERSIONS

    def network_arg_dict(self) -> dict[str, str]:
        """`network_args` as a dict."""
        return _key_values(self.network_args, "--network_args")

    def optimizer_arg_dict(self) -> dict[str, str]:
        """`optimizer_args` as a dict."""
        return _key_values(self.optimizer_args, "--optimizer_args")


@cache
def switch_needs() -> dict[str, str]:
    """Switches that need another switch on ({"fp8_scaled": "fp8_base"}), as their `needs=` declare."""
    metas = {name: meta_of(info, name) for name, info in StudioConfig.model_fields.items()}
    return {name: meta.needs for name, meta in metas.items() if meta.needs}
