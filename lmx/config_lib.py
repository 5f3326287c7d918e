"""The base config: every knob of an lmx run, once, with a one-line comment.

Config files in `configs/` call `base_config()` and set only their differences. The returned ConfigDict is locked,
so a misspelled key (in a file or in a `--config.a.b=value` override) fails with the list of valid keys.
Code under `lmx/` reads these fields directly and never supplies a hidden default.
"""

from __future__ import annotations

import ml_collections

from lmx.config_rules import BOOLEAN, REGEXES, TEXT, AxisRules, Rule, integer, names, one_of, real, registered, weighted

# Logical axis name -> mesh axes. The first matching rule wins (Flax's logical_axis_rules semantics).
# Parameters: vocab, embed, mlp, heads, kv, relpos_buckets, layers, expert.
# Activations: batch, length, embed, heads, kv, mlp, vocab, expert, capacity.
DEFAULT_RULES = (
    ("expert", "expert"),  # first: expert weights and dispatched tokens [expert, group, capacity, embed]
    ("batch", ("data", "fsdp", "expert")),  # outside the experts the expert mesh axis is one more data axis
    ("batch", ("data", "fsdp")),  # where the expert axis is taken (the groups of dispatched tokens)
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("length", None),
    ("relpos_buckets", None),
    ("layers", None),
    ("capacity", None),
)


def base_config() -> ml_collections.ConfigDict:
    """Returns the complete, unlocked spec of a run (T5.1.1-base span corruption on C4 sizes)."""
    c = ml_collections.ConfigDict()

    c.model = m = ml_collections.ConfigDict()
    m.name = "encoder_decoder"  # family: encoder_decoder | decoder_only | encoder_only (lmx.models.MODELS)
    m.vocab_size = 32128  # embedding rows; must be >= the vocabulary's size (pieces + sentinels)
    m.embed_dim = 768  # d_model, the hidden size
    m.embed_proj_dim = 0  # ALBERT's factorised embedding width E (projected to embed_dim); 0 = embed_dim
    m.num_heads = 12  # attention (query) heads
    m.num_kv_heads = 0  # key/value heads; 0 = num_heads; fewer = grouped-query attention (must divide num_heads)
    m.head_dim = 64  # d_kv, size of each head
    m.mlp_dim = 2048  # d_ff, hidden size of the (gated) MLP
    m.num_encoder_layers = 12  # encoder blocks (0 for decoder_only)
    m.num_decoder_layers = 12  # decoder blocks (0 for encoder_only)
    m.share_layers = False  # ALBERT cross-layer sharing: one block's parameters applied in every layer
    m.mlp_activations = ("gelu", "linear")  # one entry: plain MLP; two: gated (T5.1.1 gated-GELU, SwiGLU silu)
    m.dropout_rate = 0.0  # dropout on embeddings, attention probs, MLP hidden and residual branches
    m.use_bias = False  # biases in attention and MLP projections (GPT-2, BERT)
    m.norm = "rms"  # rms (T5, modern) | layer (GPT-2, BERT: LayerNorm with bias)
    m.norm_position = "pre"  # pre: x + f(norm(x)) and a final norm (T5, GPT) | post: norm(x + f(x)) (BERT)
    m.norm_epsilon = 1e-6  # epsilon of the norms
    m.position_embedding = "relative"  # relative (T5 buckets) | learned (GPT-2, BERT) | rotary (RoPE)
    # | relative_sinusoidal (Transformer-XL/XLNet: sinusoids of the query-key distance with learned biases u, v)
    m.relpos_num_buckets = 32  # relative position buckets (T5 section 2.1)
    m.relpos_max_distance = 128  # distance beyond which all positions share the last bucket
    m.rope_theta = 10000.0  # rotary base: feature pair i turns at position * theta^(-2i/head_dim)
    m.type_vocab_size = 0  # token-type (segment A/B) embeddings of encoder-only models (BERT: 2); 0 = none
    m.scale_attention_logits = False  # q . k / sqrt(head_dim); T5 folds that factor into the query init instead
    m.attention_pattern = "dense"  # dense | alternating_banded (GPT-3: odd decoder layers see only a local band)
    m.attention_band = 256  # keys a banded layer sees before each query (itself included)
    m.init = "t5"  # parameter init: t5 (fan-in normal) | normal (N(0, init_stddev^2): BERT, GPT) | xavier
    m.init_stddev = 0.02  # stddev of the `normal` init (and of `xavier` embeddings)
    m.scale_residual_init = False  # GPT-2: residual output projections scaled by 1/sqrt(2 x layers)
    m.tie_embeddings = False  # output layer = input embedding (T5.1.0, GPT-2, BERT); T5.1.1 unties it
    m.moe = ml_collections.ConfigDict()  # mixture-of-experts MLPs (lmx.models.moe)
    m.moe.num_experts = 0  # experts per MoE layer; 0 = every MLP is dense
    m.moe.moe_every = 2  # every moe_every-th MLP (layers moe_every - 1, 2 moe_every - 1, ...) is a MoE layer
    m.moe.router = "top1"  # top1 (Switch) | top2 (GShard) | expert_choice (Zhou et al. 2022; refused in causal stacks)
    m.moe.second_expert_policy = "random"  # top2: random (keep expert 2 with probability 2 g2; always at eval) | all
    m.moe.capacity_factor_train = 1.25  # expert capacity = ceil(k x factor x group tokens / num_experts), training
    m.moe.capacity_factor_eval = 2.0  # the same at evaluation (Switch: 1.25 train / 2.0 eval)
    m.moe.min_capacity = 4  # lower bound of the expert capacity (it never exceeds the group's tokens)
    m.moe.group_size = 0  # tokens per routing group (capacity, priority, aux loss are per group); 0 = one sequence
    m.moe.priority = "position"  # who keeps a full expert's slots: position (left to right) | probability (V-MoE)
    m.moe.jitter_eps = 0.01  # training multiplies the router input by U[1 - eps, 1 + eps]; 0 = off
    m.moe.router_init_scale = 0.1  # router kernel: truncated normal, variance scale / fan_in (Switch 2.4: 0.1)
    m.moe.expert_dropout_rate = 0.0  # dropout on expert hidden activations (Switch fine-tuning: 0.4)
    m.moe.dropless = False  # top1/top2: tokens sorted by expert through jax.lax.ragged_dot, nothing dropped
    m.moe.aux_loss_weight = 0.01  # weight of the load-balancing loss (Switch eq. 4 alpha)
    m.moe.z_loss_weight = 0.0  # weight of the router z-loss (ST-MoE eq. 5; ST-MoE uses 1e-3)
    m.dtype = "bfloat16"  # activation/compute dtype (float32 on CPU); params stay float32
    m.scan_layers = True  # stack layers with nn.scan: one compiled layer, fast compiles for deep models
    m.remat_policy = "dots"  # none | full | dots | dots_with_no_batch_dims: what the backward pass recomputes
    # ("dots": keep matmul outputs, recompute the rest; half the activation memory of "none" and, on CPU, faster)
    m.max_length = 4096  # longest sequence the model accepts (learned positions: rows of the position table)
    m.generator_size_fraction = 0.25  # ELECTRA: generator width, heads and MLP size / the discriminator's (same depth)
    m.mem_len = 0  # XLNet: hidden states of each row's previous segment every layer attends to (carried); 0 = none

    c.data = d = ml_collections.ConfigDict()
    d.corpus = "c4"  # embedded | text_files | books | c4 | wikipedia | lm1b (lmx.data.sources.SOURCES)
    d.text_files = ""  # glob of local .txt files, used when corpus (or a mixture's corpus) is text_files or books
    d.mixture = ()  # ((corpus, rate), ...): a seqio mixture of <corpus>_<objective> tasks; () = data.corpus alone
    d.tfds_data_dir = ""  # TFDS data_dir for TFDS corpora; "" = TFDS's default
    d.objective = "span_corruption"  # span_corruption | lm | mlm ... (lmx.objectives.OBJECTIVES)
    d.vocab_kind = "unigram"  # unigram | bpe (SentencePiece) | wordpiece (BERT) | byte_bpe (GPT-2): what vocab_path is
    d.vocab_path = ""  # .model, vocab.txt, or a vocab.json + merges.txt directory; "" = train one and cache it
    d.vocab_lower_case = True  # wordpiece: lower-case and strip accents (BERT uncased); False for cased vocabularies
    d.special_tokens = tk = ml_collections.ConfigDict()  # the token of each special role; "" = the kind's convention
    tk.eos = ""  # end of sequence, BERT's [SEP] ("": the model's eos piece, [SEP], <|endoftext|>)
    tk.unk = ""  # unknown piece ("": the model's unk piece, [UNK]; byte-level BPE has none)
    tk.bos = ""  # beginning of sequence ("": the model's bos piece if any, none for BERT, <|endoftext|>)
    tk.cls = ""  # BERT's [CLS] ("": <cls> of lmx-trained vocabularies, [CLS]; none in T5's)
    tk.mask = ""  # BERT's [MASK] ("": <mask> of lmx-trained vocabularies, [MASK]; none in T5's)
    d.vocab_pieces = 32000  # pieces of an auto-trained vocabulary (sentinels come on top)
    d.extra_ids = 100  # sentinel ids appended to the vocabulary (T5: 100)
    d.inputs_length = 512  # encoder tokens per packed example (encoder-only objectives: the sequence length)
    d.targets_length = 114  # decoder tokens per packed example (512 * 0.15 span corruption -> 114; lm: the length)
    d.noise_density = 0.15  # fraction of input tokens masked by span corruption
    d.mean_noise_span_length = 3.0  # mean length of a masked span
    d.mask_rate = 0.15  # MLM/RTD: fraction of the maskable tokens selected for prediction (BERT, ELECTRA: 0.15)
    d.mask_token_prob = 0.8  # MLM/RTD: a selected token becomes [MASK] with this probability (BERT: 0.8, ELECTRA 1)
    d.random_token_prob = 0.1  # MLM: ... or a random token with this one (BERT: 0.1); otherwise it stays unchanged
    d.mask_units = "token"  # MLM: token | whole_word | albert_ngram (1-3 words, p ~ 1/n) | spanbert (geometric)
    d.plm_k = 6  # PLM: predict the last 1/K of each factorization order (XLNet section 2.3: K = 6)
    d.plm_targets = "tokens"  # PLM: tokens (any 1/K of them) | spans (1-5 tokens per K x length, XLNet 3.1)
    d.stream_window = 32  # PLM: steps a batch row reads one contiguous stretch of the stream (lmx.data.streams)
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
    t.eval_steps = 20  # batches per evaluation (fine-tuning scores the whole dev split)
    t.progress_bar = True  # show a tqdm progress bar with steps/s, tokens/s and ETA
    t.on_nonfinite = "stop"  # stop | skip: a non-finite loss or gradient norm stops the run, or skips the update
    t.discriminator_weight = 50.0  # ELECTRA's lambda: discriminator loss weight against the generator's MLM

    c.optim = o = ml_collections.ConfigDict()
    o.name = "adafactor"  # adamw | adafactor (lmx.optim.OPTIMIZERS)
    o.learning_rate = 0.01  # peak learning rate
    o.warmup_steps = 10000  # steps before the decay starts (T5: 10^4)
    o.warmup_shape = "constant"  # during warmup: linear (0 -> peak) | constant (the peak, T5) (lmx.optim.WARMUPS)
    o.decay = "rsqrt"  # after warmup: cosine | linear | rsqrt (peak * sqrt(warmup/step), T5) | constant
    o.end_learning_rate_fraction = 0.0  # cosine/linear decay ends at peak * this fraction
    o.b1 = 0.9  # AdamW first-moment decay
    o.b2 = 0.999  # AdamW second-moment decay
    o.eps = 1e-8  # AdamW epsilon
    o.adafactor_decay_rate = 0.8  # Adafactor second-moment decay exponent (T5: 0.8)
    o.adafactor_clipping_threshold = 1.0  # Adafactor update clipping: RMS of an update at most this (T5: 1.0); 0 = off
    o.adafactor_momentum = 0.0  # Adafactor momentum; 0 = none, as in T5
    o.adafactor_epsilon1 = 1e-30  # Adafactor: added to squared gradients
    o.adafactor_epsilon2 = 1e-3  # Adafactor: floor of the parameter RMS that scales each update
    o.weight_decay = 0.0  # decoupled weight decay: each update also subtracts learning_rate * weight_decay * param
    o.weight_decay_exclude = (r".*norm.*", r".*bias.*", r".*scale$")  # regexes of parameter paths kept undecayed
    o.clip_norm = 0.0  # global-norm gradient clipping before the optimizer; 0 disables it (T5: off)

    c.checkpoint = k = ml_collections.ConfigDict()
    k.every_steps = 5000  # steps between checkpoints (one is also written at the end)
    k.keep = 3  # most recent checkpoints kept
    k.async_save = True  # write checkpoints in the background while training continues
    k.init_from = ""  # a checkpoint step directory (.../checkpoints/<step>) whose params start a new run

    # Fine-tuning on a downstream task (lmx.finetune): the same loop, the task's data, a head or text-to-text targets.
    # Learning rate, schedule, steps, batch, evaluation interval and seeds are those of optim and train; lengths are
    # data.inputs_length (and data.targets_length for text-to-text); the vocabulary is the pretraining config's.
    c.finetune = f = ml_collections.ConfigDict()
    f.task = ""  # a downstream task (lmx.finetune.catalog: sst2, cola, rte, agnews, multi30k, ...); "" = pretraining
    f.format = "classify"  # classify (a head on the body: lmx.models.heads) | text_to_text ("sst2 ...": "positive")
    f.source = "local"  # local (the task's files under data_dir) | tfds (prepared in data_dir; "" = TFDS's default)
    f.data_dir = "../shared/data"  # local: the folder holding glue/, agnews/ and translation/; tfds: TFDS's data_dir
    f.epochs = 0.0  # passes over the training split (steps = ceil(epochs x examples / batch)); 0 = train.steps
    f.head_learning_rate = 0.0  # peak learning rate of the classification head; 0 = optim.learning_rate
    f.layer_decay = 1.0  # ELECTRA's layer-wise decay: layer i of L learns at lr decay^(L - i), embeddings decay^(L + 1)
    f.head_dropout = 0.1  # dropout before the head's output layer (the body keeps model.dropout_rate)
    f.patience = 0  # stop after this many evaluations without a better selection metric; 0 = never stop early

    # Mesh axis sizes; -1 fills with the remaining devices. The product must equal the device count.
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1, "expert": 1})
    c.sharding = s = ml_collections.ConfigDict()
    s.rules = DEFAULT_RULES  # logical axis -> mesh axes, first match wins

    return c


# The valid values of every leaf of base_config(), checked by check_fields() before anything is built. A field added
# to base_config() gets its line here too (tests/config_lib_test.py checks that every leaf has one). Names from a
# registry are looked up in the live registry, so a new model, objective or optimizer needs no edit here.
FIELDS: dict[str, Rule] = {
    "model.name": registered("lmx.models:MODELS"),
    "model.vocab_size": integer(">= 1"),
    "model.embed_dim": integer(">= 1"),
    "model.embed_proj_dim": integer(">= 0"),
    "model.num_heads": integer(">= 1"),
    "model.num_kv_heads": integer(">= 0"),
    "model.head_dim": integer(">= 1"),
    "model.mlp_dim": integer(">= 1"),
    "model.num_encoder_layers": integer(">= 0"),
    "model.num_decoder_layers": integer(">= 0"),
    "model.share_layers": BOOLEAN,
    "model.mlp_activations": names("lmx.models.layers:ACTIVATIONS"),
    "model.dropout_rate": real("[0, 1)"),
    "model.use_bias": BOOLEAN,
    "model.norm": registered("lmx.models.layers:NORMS"),
    "model.norm_position": one_of("pre", "post"),
    "model.norm_epsilon": real("> 0"),
    "model.position_embedding": one_of("relative", "learned", "rotary", "relative_sinusoidal"),
    "model.relpos_num_buckets": integer(">= 1"),
    "model.relpos_max_distance": integer(">= 1"),
    "model.rope_theta": real("> 0"),
    "model.type_vocab_size": integer(">= 0"),
    "model.scale_attention_logits": BOOLEAN,
    "model.attention_pattern": registered("lmx.models.options:ATTENTION_PATTERNS"),
    "model.attention_band": integer(">= 1"),
    "model.init": registered("lmx.models.init:INIT_SCHEMES"),
    "model.init_stddev": real("> 0"),
    "model.scale_residual_init": BOOLEAN,
    "model.tie_embeddings": BOOLEAN,
    "model.moe.num_experts": integer(">= 0"),
    "model.moe.moe_every": integer(">= 1"),
    "model.moe.router": registered("lmx.models.moe:ROUTERS"),
    "model.moe.second_expert_policy": registered("lmx.models.moe:SECOND_EXPERT_POLICIES"),
    "model.moe.capacity_factor_train": real("> 0"),
    "model.moe.capacity_factor_eval": real("> 0"),
    "model.moe.min_capacity": integer(">= 1"),
    "model.moe.group_size": integer(">= 0"),
    "model.moe.priority": registered("lmx.models.moe:PRIORITIES"),
    "model.moe.jitter_eps": real("[0, 1)"),
    "model.moe.router_init_scale": real("> 0"),
    "model.moe.expert_dropout_rate": real("[0, 1)"),
    "model.moe.dropless": BOOLEAN,
    "model.moe.aux_loss_weight": real(">= 0"),
    "model.moe.z_loss_weight": real(">= 0"),
    "model.dtype": registered("lmx.models.layers:DTYPES"),
    "model.scan_layers": BOOLEAN,
    "model.remat_policy": registered("lmx.models.transformer:REMAT_POLICIES"),
    "model.max_length": integer(">= 1"),
    "model.generator_size_fraction": real("(0, 1]"),
    "model.mem_len": integer(">= 0"),
    "data.corpus": registered("lmx.data.sources:SOURCES"),
    "data.mixture": weighted("lmx.data.sources:SOURCES"),
    "data.text_files": TEXT,
    "data.tfds_data_dir": TEXT,
    "data.objective": registered("lmx.objectives:OBJECTIVES"),
    "data.vocab_kind": registered("lmx.data.special_tokens:KINDS"),
    "data.vocab_path": TEXT,
    "data.vocab_lower_case": BOOLEAN,
    "data.special_tokens.eos": TEXT,
    "data.special_tokens.unk": TEXT,
    "data.special_tokens.bos": TEXT,
    "data.special_tokens.cls": TEXT,
    "data.special_tokens.mask": TEXT,
    "data.vocab_pieces": integer(">= 1"),
    "data.extra_ids": integer(">= 0"),
    "data.inputs_length": integer(">= 1"),
    "data.targets_length": integer(">= 1"),
    "data.noise_density": real("(0, 1)"),
    "data.mask_rate": real("(0, 1)"),
    "data.mask_token_prob": real("[0, 1]"),
    "data.random_token_prob": real("[0, 1]"),
    "data.mask_units": registered("lmx.data.tasks:MASK_UNITS"),
    "data.plm_k": integer(">= 1"),
    "data.plm_targets": one_of("tokens", "spans"),
    "data.stream_window": integer(">= 1"),
    "data.mean_noise_span_length": real(">= 1"),
    "data.pack": BOOLEAN,
    "data.shuffle_buffer": integer(">= 1"),
    "data.eval_fraction": real("(0, 1)"),
    "data.seed": integer(">= 0"),
    "data.input_shards": integer(">= 1", also=-1),
    "train.steps": integer(">= 1"),
    "train.batch_size": integer(">= 1"),
    "train.microbatches": integer(">= 1"),
    "train.seed": integer(">= 0"),
    "train.z_loss": real(">= 0"),
    "train.label_smoothing": real("[0, 1)"),
    "train.log_every": integer(">= 1"),
    "train.eval_every": integer(">= 0"),
    "train.eval_steps": integer(">= 0"),
    "train.progress_bar": BOOLEAN,
    "train.on_nonfinite": one_of("stop", "skip"),
    "train.discriminator_weight": real("> 0"),
    "optim.name": registered("lmx.optim:OPTIMIZERS"),
    "optim.learning_rate": real("> 0"),
    "optim.warmup_steps": integer(">= 0"),
    "optim.warmup_shape": registered("lmx.optim:WARMUPS"),
    "optim.decay": registered("lmx.optim:SCHEDULES"),
    "optim.end_learning_rate_fraction": real("[0, 1]"),
    "optim.b1": real("[0, 1)"),
    "optim.b2": real("[0, 1)"),
    "optim.eps": real("> 0"),
    "optim.adafactor_decay_rate": real("(0, 1]"),
    "optim.adafactor_clipping_threshold": real(">= 0"),
    "optim.adafactor_momentum": real("[0, 1)"),
    "optim.adafactor_epsilon1": real("> 0"),
    "optim.adafactor_epsilon2": real("> 0"),
    "optim.weight_decay": real(">= 0"),
    "optim.weight_decay_exclude": REGEXES,
    "optim.clip_norm": real(">= 0"),
    "checkpoint.every_steps": integer(">= 1"),
    "checkpoint.keep": integer(">= 1"),
    "checkpoint.async_save": BOOLEAN,
    "checkpoint.init_from": TEXT,
    "finetune.task": TEXT,  # checked against lmx.finetune.catalog when set ("" = pretraining)
    "finetune.format": one_of("classify", "text_to_text"),
    "finetune.source": one_of("local", "tfds"),
    "finetune.data_dir": TEXT,
    "finetune.epochs": real(">= 0"),
    "finetune.head_learning_rate": real(">= 0"),
    "finetune.layer_decay": real("(0, 1]"),
    "finetune.head_dropout": real("[0, 1)"),
    "finetune.patience": integer(">= 0"),
    "mesh.data": integer(">= 1", also=-1),
    "mesh.fsdp": integer(">= 1", also=-1),
    "mesh.tensor": integer(">= 1", also=-1),
    "mesh.expert": integer(">= 1", also=-1),
    "sharding.rules": AxisRules("lmx.sharding:MESH_AXES"),
}


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
    """'section.field' -> value of every leaf of `config` (nested sections flattened)."""
    out: dict[str, object] = {}
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_fields(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming `config.<path>`, its value and the valid range for the first field (in FIELDS
    order) whose value its rule refuses."""
    values = leaves(config)
    for path, rule in FIELDS.items():
        if path in values:
            problem = rule.problem(values[path])
            if problem:
                raise ConfigError(f"config.{path}={values[path]!r} {problem}")


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
    """Loads `path.py[:arg]` the way `--config=` does: the module's `get_config(arg)`. A file that is missing, is
    not valid Python, refuses `arg` or fails otherwise raises ConfigError naming the file and the fix."""
    import importlib.util
    import os

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config={spec}: no such file {path!r}; pass a file from configs/, e.g. configs/t5_tiny.py")
    module_spec = importlib.util.spec_from_file_location("_lmx_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"--config={spec}: {path} line {e.lineno} is not valid Python ({e.msg}); fix the file") from e
    except Exception as e:  # whatever the file's own code raises: one line naming it
        raise ConfigError(f"--config={spec}: running {path} raised {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"--config={spec}: {path} defines no get_config(arg=None); a config file returns its config")
    try:
        config = module.get_config(arg or None) if arg else module.get_config()
    except ValueError as e:  # configs refuse an unknown `:arg` with a ValueError saying which they take
        raise ConfigError(f"--config={spec}: {e}") from e
    except Exception as e:
        call = f"get_config({arg!r})" if arg else "get_config()"
        raise ConfigError(f"--config={spec}: {call} raised {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--config={spec}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def _parse_override(text: str | None, current):
    """The value `--config.a.b=text` gives a field holding `current`, parsed as ml_collections' flags parse it."""
    from absl import flags
    from ml_collections.config_flags import tuple_parser

    if isinstance(current, bool):
        return True if text is None else flags.BooleanParser().parse(text)
    parser = {
        int: flags.IntegerParser(),
        float: flags.FloatParser(),
        tuple: tuple_parser.TupleParser(),
        str: flags.ArgumentParser(),
    }.get(type(current))
    if parser is None or text is None:  # None-valued or ConfigDict fields: left to ml_collections
        return current
    return parser.parse(text)


def check_overrides(argv: list[str]) -> ml_collections.ConfigDict | None:
    """Loads `--config=FILE[:arg]` and applies every `--config.a.b=value` of argv the way absl and ml_collections
    will, then checks the fields (check_fields): before flags are parsed, so that a missing or broken file, an
    unknown key, a value of the wrong type (`--config.optim.learning_rate=abc`) or out of range is a one-line
    ConfigError naming the key and the fix, not a traceback or absl's `FATAL Flags parsing error`.

    Returns the config as the command line makes it (None when argv has no --config).
    """
    import re

    spec = None
    for i, arg in enumerate(argv):
        if re.match(r"^--?config=", arg):
            spec = arg.split("=", 1)[1]
        elif re.match(r"^--?config$", arg) and i + 1 < len(argv):
            spec = argv[i + 1]
    if spec is None:
        return None
    config = load_config_file(spec)
    for i, arg in enumerate(argv):
        match = re.match(r"^--?(no)?config\.([^=]+)(?:=(.*))?$", arg, re.DOTALL)
        if not match:
            continue
        negated, path, text = match.group(1), match.group(2), match.group(3)
        *parents, leaf = path.split(".")
        node, walked = config, "config"
        for key in [*parents, leaf]:
            if not isinstance(node, ml_collections.ConfigDict) or key not in node:
                valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                raise ConfigError(f"unknown config key {walked}.{key} (in {arg}); valid keys of {walked}: {valid}")
            parent, node, walked = node, node[key], f"{walked}.{key}"
        if negated:  # --noconfig.a.b: absl's way of setting a boolean false
            text = "false"
        elif text is None and not isinstance(node, bool) and i + 1 < len(argv):
            text = argv[i + 1]  # --config.a.b VALUE
        try:
            value = _parse_override(text, node)
        except ValueError as e:
            rule = FIELDS.get(path)
            want = rule.describe() if rule else f"a {type(node).__name__}"
            raise ConfigError(f"{walked}={text!r} is not {want} (from {arg})") from e
        try:
            parent[leaf] = value
        except (TypeError, ValueError) as e:  # a ConfigDict field keeps its type
            raise ConfigError(f"{walked}={text!r}: {e} (from {arg})") from e
    check_fields(config)
    return config
