"""config.data: which seqio task or mixture, its files, the row layout and the vocabulary (aya_jax/data/)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.task = "aya_default"  # a registered seqio task or mixture name (README: Data)
    d.data_dir = ""  # where local/generated data lives; "" = $AYA_DATA_DIR or ~/.cache/aya_jax/data
    d.seq_len = 512  # decoder tokens per row (an encoder-decoder's targets; a preference pair's side)
    d.inputs_len = 0  # encoder-decoder models (mT5): encoder tokens per row; 0 = seq_len
    d.pack = True
    d.shuffle_buffer = 10_000
    d.strict = False  # True: the first malformed row is an error (file:line); False: counted and reported
    d.max_example_chars = 65_536  # rows with more text are skipped as "over-long row"; 0 = no limit
    # How a prompt and its answer become one row (aya_jax/data/chat_template.py): "chat", the Cohere chat
    # template (turn markers; the answer ends with <|END_OF_TURN_TOKEN|>), or "raw", prompt ++ answer ++ EOS
    # with nothing between them (plain language modelling; Aya 101's encoder-decoder rows).
    d.format = "chat"
    # Local copies of the published data (.jsonl / .jsonl.gz / .parquet, split by file name); "" = the
    # environment variable (AYA_DATASET_DIR, ...) or <data_dir>/<source> if it exists. See aya_jax/data/catalog.py.
    d.aya_dataset_dir = ""
    d.aya_dataset_format = "files"  # files | tfds (a TFDS dataset prepared once from those files)
    d.aya_collection_dir = ""
    d.preference_dir = ""  # prompt, chosen, rejected, language
    d.prompts_dir = ""  # prompt, language
    # Mixtures (task = "aya23_sft", "aya101_sft", ...) are defined in gin/<name>.gin.
    d.gin_files = ()  # more gin files, parsed after the mixture's own
    d.gin_bindings = ()  # e.g. ("aya23_sft/mixture_spec.temperature = 1.0",)
    d.mixture_temperature = 0.0  # > 0 overrides the mixture's temperature (p ∝ n^(1/T)); 0 = gin's
    # Logical input shards; 0 = one per host. Each global batch is the concatenation of every shard's next
    # global_batch_size / num_shards rows, and host h reads only its num_shards / hosts shards; a fixed value
    # (dividing the batch, divisible by every host count you use) makes the data seen, and a resumed data
    # position, the same on 1 host or many. See aya_jax/data/pipeline.py HostTrainIterator.
    d.num_shards = 0
    d.train_split = "train"
    d.eval_split = "validation"
    d.vocab = ml_collections.ConfigDict()
    d.vocab.kind = "sentencepiece"  # sentencepiece | hf_tokenizer
    d.vocab.path = ""  # model file; "" = train one on the task's text and cache it in data_dir
    d.vocab.size = 8000
    return d


def validate(d: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(d, "data")
    s.at_least("seq_len", 2)
    s.at_least("inputs_len", 0, " (0 = seq_len)")
    s.at_least("shuffle_buffer", 1)  # rows; seqio's buffer needs one (aya_jax/data/pipeline.py)
    s.at_least("max_example_chars", 0, " (0 = no limit)")
    s.at_least("mixture_temperature", 0.0, " (0 = the mixture's own)")
    s.at_least("num_shards", 0, " (0 = one per host)")
    s.one_of("aya_dataset_format", ("files", "tfds"))
    s.one_of("format", ("chat", "raw"))
    Section(d.vocab, "data.vocab").one_of("kind", ("sentencepiece", "hf_tokenizer"))
    Section(d.vocab, "data.vocab").at_least("size", 1)
