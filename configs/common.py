"""Every config field, with its default, in one place. Experiment files start from `base_config()`."""

import ml_collections
from ml_collections import config_dict


def default_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """Logical axis name -> mesh axes. FSDP over `fsdp`, tensor parallelism over `tensor`, batch over both
    data axes. Changing the parallelism layout means changing this table (or the mesh shape), never the model."""
    return (
        # parameters
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("head_dim", None),
        ("layers", None),
        ("norm", None),
        # activations
        ("act_batch", ("data", "fsdp")),
        ("act_len", None),
        ("act_embed", None),
        ("act_heads", "tensor"),
        ("act_kv_heads", "tensor"),
        ("act_mlp", "tensor"),
        ("act_vocab", "tensor"),
    )


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "sft"  # trainer name: see aya_jax/jobs/__init__.py
    c.workdir = "workdirs/run"  # --workdir overrides
    c.seed = 0

    # ---- model -------------------------------------------------------------------------------------------
    c.model = ml_collections.ConfigDict()
    c.model.preset = "cohere-tiny"  # see aya_jax/models/cohere.py PRESETS
    # Any CohereConfig field on top of the preset; None keeps the preset's value.
    c.model.overrides = ml_collections.ConfigDict(
        {
            name: config_dict.placeholder(kind)
            for name, kind in (
                ("vocab_size", int),
                ("hidden_size", int),
                ("intermediate_size", int),
                ("num_layers", int),
                ("num_heads", int),
                ("num_kv_heads", int),
                ("head_dim", int),
                ("max_position_embeddings", int),
                ("rope_theta", float),
                ("logit_scale", float),
                ("layer_norm_eps", float),
                ("use_qk_norm", bool),
                ("initializer_range", float),
            )
        }
    )
    c.model.dtype = "bfloat16"  # compute dtype; parameters and optimiser state stay float32
    c.model.param_dtype = "float32"
    c.model.remat = "none"  # none | full | dots_saveable
    c.model.scan_layers = True
    # A Hugging Face directory (config.json + safetensors + tokenizer.json) to start from: its config.json defines
    # the architecture (preset and overrides unused) and its weights replace the random init (aya_jax/hf/io.py).
    c.model.hf_init_dir = ""
    c.model.attention = "xla"  # xla (einsum + mask) | cudnn (jax.nn.dot_product_attention on GPU)

    # ---- mesh & sharding ----------------------------------------------------------------------------------
    c.mesh = ml_collections.ConfigDict()
    c.mesh.axes = ("data", "fsdp", "tensor")
    c.mesh.shape = (1, -1, 1)  # one entry may be -1: "all the remaining devices"
    c.mesh.rules = default_rules()
    c.mesh.distributed = "auto"  # auto | on | off: jax.distributed.initialize() on multi-host runtimes
    # Multi-host failure bounds (jax.distributed.initialize): a host silent for heartbeat_timeout_seconds ends
    # the whole job with an error instead of leaving the others waiting in a collective.
    c.mesh.heartbeat_timeout_seconds = 100
    c.mesh.initialization_timeout_seconds = 300  # how long to wait for every host to join
    c.mesh.shutdown_timeout_seconds = 300  # how long a finished host waits for the others at exit

    # ---- data ---------------------------------------------------------------------------------------------
    c.data = ml_collections.ConfigDict()
    c.data.task = "aya_default"  # a registered seqio task or mixture name
    c.data.data_dir = ""  # where local/generated data lives; "" = $AYA_DATA_DIR or ~/.cache/aya_jax/data
    c.data.seq_len = 512  # decoder tokens per row (an encoder-decoder's targets)
    c.data.inputs_len = 0  # encoder-decoder models (mT5): encoder tokens per row; 0 = seq_len
    c.data.pack = True
    c.data.shuffle_buffer = 10_000
    c.data.strict = (
        False  # True: the first malformed row is an error (file:line); False: counted and reported
    )
    c.data.max_example_chars = 65_536  # rows with more text are skipped as "over-long row"; 0 = no limit
    c.data.chat_template = False  # format rows with the Cohere chat template (aya_jax/data/chat_template.py)
    # Local copies of the published data (.jsonl / .jsonl.gz / .parquet, split by file name); "" = the
    # environment variable (AYA_DATASET_DIR, ...) or <data_dir>/<source> if it exists. See aya_jax/data/catalog.py.
    c.data.aya_dataset_dir = ""
    c.data.aya_dataset_format = "files"  # files | tfds (a TFDS dataset prepared once from those files)
    c.data.aya_collection_dir = ""
    c.data.preference_dir = ""  # prompt, chosen, rejected, language
    c.data.prompts_dir = ""  # prompt, language
    # Mixtures (config.data.task = "aya23_sft", "aya101_sft", ...) are defined in gin/<name>.gin.
    c.data.gin_files = ()  # more gin files, parsed after the mixture's own
    c.data.gin_bindings = ()  # e.g. ("aya23_sft/mixture_spec.temperature = 1.0",)
    c.data.mixture_temperature = 0.0  # > 0 overrides the mixture's temperature (p ∝ n^(1/T)); 0 = gin's
    # Logical input shards; 0 = one per host. Each global batch is the concatenation of every shard's next
    # global_batch_size / num_shards rows, and host h reads only its num_shards / hosts shards; a fixed value
    # (dividing the batch, divisible by every host count you use) makes the data seen, and a resumed data
    # position, the same on 1 host or many. See aya_jax/data/pipeline.py HostTrainIterator.
    c.data.num_shards = 0
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.vocab = ml_collections.ConfigDict()
    c.data.vocab.kind = "sentencepiece"  # sentencepiece | hf_tokenizer
    c.data.vocab.path = ""  # model file; "" = train one on the task's text and cache it in data_dir
    c.data.vocab.size = 8000

    # ---- training -----------------------------------------------------------------------------------------
    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.global_batch_size = 8  # sequences per optimiser step, across all hosts
    c.train.grad_accum_steps = 1  # microbatches per optimiser step (global_batch_size must divide)
    c.train.z_loss = 0.0
    c.train.log_every = 10
    c.train.eval_every = 200
    c.train.eval_batches = 4
    c.train.progress_bar = True
    c.train.plot = True  # loss-curve PNG in the workdir at the end

    # ---- optimiser ----------------------------------------------------------------------------------------
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 3e-4
    c.optimizer.schedule = "cosine"  # cosine | linear | constant (after linear warmup)
    c.optimizer.warmup_steps = 100
    c.optimizer.end_lr_fraction = 0.1
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.1
    c.optimizer.grad_clip_norm = 1.0  # 0 disables clipping

    # ---- checkpoints --------------------------------------------------------------------------------------
    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500
    c.checkpoint.keep = 3
    c.checkpoint.directory = ""  # "" = <workdir>/checkpoints; may be gs://... (needed on multi-host pods)
    c.checkpoint.async_save = True
    # Params-only start (new optimiser, step 0) from another run: its workdir or checkpoints/ directory (the
    # newest step), e.g. a quickstart run, a merge or an hf_import output. Ignored when resuming.
    c.checkpoint.init_from = ""

    # ---- metrics ------------------------------------------------------------------------------------------
    c.metrics = ml_collections.ConfigDict()
    c.metrics.tensorboard = True
    c.metrics.jsonl = True
    c.metrics.peak_flops_per_device = 0.0  # 0 = look up the device kind, or measure it on CPU

    # ---- ahead-of-time compile check (job aot_compile, aya_jax/jobs/aot.py) ---------------------------------------
    c.aot = ml_collections.ConfigDict()
    c.aot.platform = "tpu"  # tpu: for config.aot.topology (libtpu, no TPU needed) | cpu: the local devices
    c.aot.topology = "v5e-16"  # gcloud accelerator type (v5litepod-16, v4-32, ...) or libtpu's (v5e:4x4)
    c.aot.hbm_gib = 0.0  # per device; 0 = the device kind's from aya_jax/jobs/aot.py HBM_GIB_PER_CHIP
    return c
