"""The base config: every knob of an lmx run, once, with a one-line comment.

Config files in `configs/` call `base_config()` and set only their differences. The returned ConfigDict is locked,
so a misspelled key (in a file or in a `--config.a.b=value` override) fails with the list of valid keys.
Code under `lmx/` reads these fields directly and never supplies a hidden default.
"""

from __future__ import annotations

import ml_collections

# Logical axis name -> mesh axes. The first matching rule wins (Flax's logical_axis_rules semantics).
# Parameters: vocab, embed, mlp, heads, kv, relpos_buckets, layers, expert.
# Activations: batch, length, embed, heads, kv, mlp, vocab, expert, capacity.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("length", None),
    ("relpos_buckets", None),
    ("layers", None),
    ("expert", "expert"),
    ("capacity", None),
)


def base_config() -> ml_collections.ConfigDict:
    """Returns the complete, unlocked spec of a run (T5.1.1-base span corruption on C4 sizes)."""
    c = ml_collections.ConfigDict()

    c.model = m = ml_collections.ConfigDict()
    m.name = "encoder_decoder"  # key of lmx.models.MODELS
    m.vocab_size = 32128  # embedding rows; must be >= the vocabulary's size (pieces + sentinels)
    m.embed_dim = 768  # d_model
    m.num_heads = 12  # attention heads
    m.head_dim = 64  # d_kv, size of each head
    m.mlp_dim = 2048  # d_ff, hidden size of the (gated) MLP
    m.num_encoder_layers = 12  # encoder blocks
    m.num_decoder_layers = 12  # decoder blocks
    m.mlp_activations = ("gelu", "linear")  # one entry: plain MLP; two: gated (T5.1.1 gated-GELU)
    m.dropout_rate = 0.0  # dropout on embeddings, attention probs, MLP hidden and residual branches
    m.relpos_num_buckets = 32  # relative position buckets (T5 section 2.1)
    m.relpos_max_distance = 128  # distance beyond which all positions share the last bucket
    m.norm_epsilon = 1e-6  # epsilon of the scale-only RMS norm
    m.tie_embeddings = False  # T5.1.1 unties the output layer from the input embedding
    m.dtype = "bfloat16"  # activation/compute dtype (float32 on CPU); params stay float32
    m.scan_layers = True  # stack layers with nn.scan: one compiled layer, fast compiles for deep models
    m.remat_policy = "dots"  # none | full | dots | dots_with_no_batch_dims: what the backward pass recomputes
    # ("dots": keep matmul outputs, recompute the rest; half the activation memory of "none" and, on CPU, faster)
    m.max_length = 4096  # longest sequence the model accepts (relative positions have no hard limit)

    c.data = d = ml_collections.ConfigDict()
    d.corpus = "c4"  # embedded | text_files | c4 | wikipedia (lmx.data.sources.SOURCES)
    d.text_files = ""  # glob of local .txt files, used when corpus == "text_files"
    d.tfds_data_dir = ""  # TFDS data_dir for TFDS corpora; "" = TFDS's default
    d.objective = "span_corruption"  # key of lmx.data.tasks.OBJECTIVES
    d.vocab_path = ""  # SentencePiece model; "" = train one on the corpus on first use and cache it
    d.vocab_pieces = 32000  # pieces of an auto-trained vocabulary (sentinels come on top)
    d.extra_ids = 100  # sentinel ids appended to the vocabulary (T5: 100)
    d.inputs_length = 512  # encoder tokens per packed example
    d.targets_length = 114  # decoder tokens per packed example (512 * 0.15 span corruption -> 114)
    d.noise_density = 0.15  # fraction of input tokens masked by span corruption
    d.mean_noise_span_length = 3.0  # mean length of a masked span
    d.pack = True  # pack several examples per row (segment ids keep them apart)
    d.shuffle_buffer = 10000  # examples in the shuffle buffer of the training stream
    d.eval_fraction = 0.05  # documents held out for evaluation when the corpus has no validation split
    d.seed = 42  # seed of shuffling and of the preprocessors' randomness
    d.input_shards = -1  # seqio shards the global batch is read from (-1: one per process); fix it to keep the
    # data stream identical across process counts (it must be a multiple of the process count)

    c.train = t = ml_collections.ConfigDict()
    t.steps = 524288  # number of training steps (optimizer updates)
    t.batch_size = 128  # global batch, in packed rows per step
    t.microbatches = 1  # gradient accumulation: the batch is split into this many sequential microbatches
    t.seed = 0  # seed of parameter init and dropout
    t.z_loss = 1e-4  # weight of the output-logit z-loss (log Z)^2; 0 disables it
    t.label_smoothing = 0.0  # label smoothing of the target cross-entropy
    t.log_every = 100  # steps between train-metric log events
    t.eval_every = 1000  # steps between evaluations; 0 disables periodic evaluation
    t.eval_steps = 20  # batches per evaluation
    t.progress_bar = True  # show a tqdm progress bar with steps/s, tokens/s and ETA
    t.on_nonfinite = "stop"  # stop | skip: a non-finite loss or gradient norm stops the run, or skips the update

    c.optim = o = ml_collections.ConfigDict()
    o.name = "adafactor"  # adamw | adafactor (lmx.optim.OPTIMIZERS)
    o.learning_rate = 0.01  # peak learning rate, reached at the end of warmup
    o.warmup_steps = 10000  # linear warmup from 0 to the peak
    o.decay = "rsqrt"  # after warmup: cosine | linear | rsqrt | constant (lmx.optim.SCHEDULES)
    o.end_learning_rate_fraction = 0.0  # cosine/linear decay ends at peak * this fraction
    o.b1 = 0.9  # AdamW first-moment decay
    o.b2 = 0.999  # AdamW second-moment decay
    o.eps = 1e-8  # AdamW epsilon
    o.adafactor_decay_rate = 0.8  # Adafactor second-moment decay exponent (T5: 0.8)
    o.adafactor_clipping_threshold = 1.0  # Adafactor update clipping (T5: 1.0)
    o.adafactor_momentum = 0.0  # Adafactor momentum; 0 = none, as in T5
    o.weight_decay = 0.0  # decoupled weight decay (AdamW) / decay rate (Adafactor)
    o.weight_decay_exclude = (r".*norm.*", r".*bias.*", r".*scale$")  # regexes of parameter paths kept undecayed
    o.clip_norm = 1.0  # global-norm gradient clipping; 0 disables it

    c.checkpoint = k = ml_collections.ConfigDict()
    k.every_steps = 5000  # steps between checkpoints (one is also written at the end)
    k.keep = 3  # most recent checkpoints kept
    k.async_save = True  # write checkpoints in the background while training continues
    k.init_from = ""  # a checkpoint step directory (.../checkpoints/<step>) whose params start a new run

    # Mesh axis sizes; -1 fills with the remaining devices. The product must equal the device count.
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1, "expert": 1})
    c.sharding = s = ml_collections.ConfigDict()
    s.rules = DEFAULT_RULES  # logical axis -> mesh axes, first match wins

    return c


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks the structure so unknown keys raise (values may still change)."""
    config.lock()
    return config


class ConfigError(ValueError):
    """A config that cannot work, found before anything is compiled; the message names the value and the fix."""


def apply_debug(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `:debug` variant of a config: same architecture, a CPU-sized run on the embedded corpus."""
    config.model.dtype = "float32"
    config.data.corpus = "embedded"
    config.data.vocab_pieces = 2000
    config.data.inputs_length, config.data.targets_length = 128, 32
    config.data.shuffle_buffer = 1000
    config.train.steps, config.train.batch_size = 20, 8
    config.train.log_every, config.train.eval_every, config.train.eval_steps = 5, 10, 2
    config.optim.warmup_steps = 5
    config.checkpoint.every_steps = 10
    return config


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path.py[:arg]` the way `--config=` does: the module's `get_config(arg)`."""
    import importlib.util
    import os

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config={spec}: no such file {path!r}; pass a file from configs/, e.g. configs/t5_tiny.py")
    module_spec = importlib.util.spec_from_file_location("_lmx_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None) if arg else module.get_config()


def check_overrides(argv: list[str]) -> None:
    """Checks every `--config.a.b=value` in argv names an existing key, before flags are parsed.

    ml_collections' own error for a locked config is a traceback; this one is a line naming the valid keys.
    """
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return
    config = load_config_file(spec)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].split("=", 1)[0]
        node = config
        walked = "config"
        for key in path.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or key not in node:
                valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                raise ConfigError(f"unknown config key {walked}.{key} (in {arg}); valid keys of {walked}: {valid}")
            node = node[key]
            walked = f"{walked}.{key}"
