"""config.mesh: the device mesh, the logical-axis rules that shard the model over it, and multi-host setup
(aya_jax/sharding.py `setup`, used by every job)."""

import ml_collections

from aya_jax.defaults.checks import Section


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


def defaults() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.axes = ("data", "fsdp", "tensor")
    m.shape = (1, -1, 1)  # one entry may be -1: "all the remaining devices"
    m.rules = default_rules()
    m.distributed = "auto"  # auto | on | off: jax.distributed.initialize() on multi-host runtimes
    # Multi-host failure bounds (jax.distributed.initialize): a host silent for heartbeat_timeout_seconds ends
    # the whole job with an error instead of leaving the others waiting in a collective.
    m.heartbeat_timeout_seconds = 100
    m.initialization_timeout_seconds = 300  # how long to wait for every host to join
    m.shutdown_timeout_seconds = 300  # how long a finished host waits for the others at exit
    return m


def validate(m: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(m, "mesh")
    s.one_of("distributed", ("auto", "on", "off"))
    # The device-free half of sharding.resolve_mesh_shape's checks, here so that a bad shape is refused before
    # jax.distributed starts a cluster; whether the product fits the devices is known only there.
    shape = tuple(m.shape)
    if not all(isinstance(size, int) and not isinstance(size, bool) for size in shape):
        s.fail("shape", f"entries must be integers, got {shape}")
    if len(shape) != len(m.axes):
        s.fail("shape", f"{shape} has {len(shape)} entries for {len(m.axes)} axes {tuple(m.axes)}")
    if sum(1 for size in shape if size == -1) > 1:
        s.fail("shape", f"only one entry may be -1, got {shape}")
    if any(not (size >= 1 or size == -1) for size in shape):
        s.fail("shape", f"entries must be >= 1 or -1 (the remaining devices), got {shape}")
    for field in ("heartbeat_timeout_seconds", "initialization_timeout_seconds", "shutdown_timeout_seconds"):
        s.at_least(field, 1)
