"""config.curation: the data-curation jobs (aya_jax/jobs/curate.py, aya_jax/curation/): diversity-first
selection from a pool of rows (select_diverse), replies from a teacher pool routed per prompt (arbitrage) or
chosen best-of-k for an attribute (active_inheritance). A job checks only the fields it reads."""

import ml_collections

from aya_jax.curation import arbitrage, attributes, clustering, diversity
from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # The pool: .jsonl / .parquet files of rows in the Aya Dataset format (inputs, targets, language_code, ...);
    # every field is kept in the output
    c.pool = ()  # e.g. --config.curation.pool="('/data/aya_dataset/train-00000-of-00001.parquet',)"
    c.text_field = "inputs"  # what is embedded
    # Vectors: a model's mean-pooled final hidden states of each row's text (any checkpoint the project reads;
    # the tokenizer as in config.eval), or a .npy [rows, dim] file in pool order
    c.embed_checkpoint = ""
    c.tokenizer = ""
    c.vectors = ""
    c.batch_size = 32  # rows per embedding batch
    c.max_length = 512  # tokens embedded per row (the first ones)
    c.part_rows = 4096  # embeddings are written this many rows per file (a killed run resumes at the next)
    # k-means (aya_jax/curation/clustering.py)
    c.clusters = 1024
    c.kmeans_iterations = 25
    c.kmeans_init = "k-means++"  # k-means++ | random
    c.kmeans_restarts = 1
    c.sample_per_centroid = 256  # training sample per centroid (0 = every row)
    # Selection (aya_jax/curation/diversity.py)
    c.budget = 0.1  # a fraction of the pool (<= 1), or a row count (> 1)
    c.within = "uniform"  # uniform | quality: softmax(quality / temperature) inside each cluster
    c.quality_field = ""  # quality: a numeric field of the rows (e.g. a reward model's score)
    c.temperature = 1.0
    # The iterative variant (rounds > 1; the paper's K = 512, 3 rounds): after each round but the last, the model
    # finetune_from is fine-tuned (the sft job, finetune_steps) on everything selected so far, answers the round's
    # prompts, and the reward model's gap r(gold) - r(generated) per cluster weights the next round's budget
    c.rounds = 1
    c.finetune_from = ""  # "" = embed_checkpoint
    c.finetune_steps = 100
    c.gold_field = "targets"  # the rows' gold answers
    c.weight_temperature = 1.0  # cluster weights = softmax(mean gap / weight_temperature)
    c.plot = True
    # --- Teachers (arbitrage, active_inheritance; aya_jax/curation/teachers.py): the prompts are the pool's
    # text_field, their language its language_field ---
    c.teachers = ()  # "name=source[;option=value...]": a checkpoint path or an http(s):// endpoint (+ model=...)
    c.language_field = "language_code"
    # each teacher's generation options unless its entry sets them
    c.template = "auto"  # auto | cohere | none: how a prompt reaches a local teacher
    c.system = ""
    c.max_new_tokens = 256
    c.sample_temperature = 0.7
    c.top_k = 0
    c.top_p = 1.0
    c.gen_batch = 64  # prompts per generation chunk (each appended to the log before the next starts)
    # --- Multilingual arbitrage (aya_jax/curation/arbitrage.py) ---
    c.routing = "reward"  # fixed | reward | learned | single | random
    c.route_table = ()  # fixed: "language=teacher" entries, "*=teacher" for every other language
    c.single_teacher = ""  # single: the teacher that answers everything
    c.reward_model = ""  # a `reward` run's workdir: scores replies (reward / learned routing: it or a judge)
    # ... or a pairwise judge plays a round robin of the teachers' replies instead (both orders; the most points
    # wins), in the teacher entry form: "name=http(s)://host/v1;model=...[;api_key_env=...;concurrency=...]" or
    # "name=<checkpoint>" (in process, greedy); option max_new_tokens is the judgment's length (default 1024).
    # The reward model, when also given, still scores the chosen replies for the report
    c.judge = ""
    c.reward_prompt_len = 0  # prompt tokens the reward model keeps; 0 = config.reward.prompt_len's default
    c.router_fraction = (
        0.2  # learned: share of the pool reward-routed (every teacher answers) to fit the router
    )
    c.router_holdout = 0.2  # ... of which this share is held out to report the router's accuracy
    c.router_l2 = 1e-2
    # --- Active inheritance (aya_jax/curation/attributes.py) ---
    c.samples = 10  # k replies per prompt and teacher; the candidates of a prompt are every teacher's k
    c.attributes = (
        "mtld",
    )  # "name" or "name:weight" (weight < 0 minimises): length, mtld, toxicity, language
    c.lexicon_dir = ""  # toxicity: the LDNOOBW lexicon folder (<language code>.txt)
    c.toxicity_scorer = (
        ""  # "module:function" (texts, languages) -> scores replacing the lexicon; "" = lexicon
    )
    return c


def attribute_weights(entries) -> dict[str, float]:
    """{attribute: weight} from "name" / "name:weight" entries; ValueError naming the entry otherwise."""
    out: dict[str, float] = {}
    for entry in entries:
        name, _, weight = str(entry).partition(":")
        if name not in attributes.NAMES:
            raise ValueError(f"{entry!r}: unknown attribute (known: {', '.join(attributes.NAMES)})")
        try:
            out[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"{entry!r}: the weight is not a number") from None
    return out


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(c, "curation")
    if not c.pool:
        s.fail("pool", "no pool files (.jsonl / .parquet rows with a text field)")
    job = config.job
    # what each job needs
    if job in ("arbitrage", "active_inheritance"):
        if not c.teachers:
            s.fail("teachers", 'no teacher ("name=checkpoint" or "name=http://host/v1;model=...")')
    elif bool(c.embed_checkpoint) == bool(c.vectors):
        s.fail(
            "embed_checkpoint",
            "set exactly one of embed_checkpoint (a model to embed with) and vectors (.npy)",
        )
    if job == "arbitrage":
        _needs_of_routing(s, c)
    if job == "active_inheritance":
        _needs_of_attributes(s, c)
    if job == "select_diverse" and c.rounds > 1:
        if not c.reward_model:
            s.fail(
                "reward_model", "the iterative variant (rounds > 1) scores gold vs generated answers with it"
            )
        if not (c.finetune_from or c.embed_checkpoint):
            s.fail(
                "finetune_from",
                "the iterative variant fine-tunes a model each round (or set embed_checkpoint)",
            )
    # every field's range, whichever job reads it
    s.at_least("batch_size", 1)
    s.at_least("max_length", 1)
    s.at_least("part_rows", 1)
    s.at_least("clusters", 1)
    s.at_least("kmeans_iterations", 1)
    s.one_of("kmeans_init", clustering.INITS)
    s.at_least("kmeans_restarts", 1)
    s.at_least("sample_per_centroid", 0)
    s.greater("budget", 0)
    if c.budget > 1 and c.budget != int(c.budget):
        s.fail("budget", f"{c.budget} is neither a fraction (<= 1) nor a row count")
    s.one_of("within", diversity.WITHIN)
    if c.within == "quality" and not c.quality_field:
        s.fail("quality_field", "within=quality needs the numeric field of the rows to weight by")
    s.greater("temperature", 0)
    s.at_least("rounds", 1)
    s.at_least("finetune_steps", 1)
    s.greater("weight_temperature", 0)
    s.one_of("template", ("auto", "cohere", "none"))
    s.at_least("max_new_tokens", 1)
    s.at_least("sample_temperature", 0.0)
    s.at_least("top_k", 0)
    if not 0 < c.top_p <= 1:
        s.fail("top_p", f"must be in (0, 1], got {c.top_p}")
    s.at_least("gen_batch", 1)
    s.at_least("reward_prompt_len", 0)
    s.one_of("routing", arbitrage.STRATEGIES)
    if not 0 < c.router_fraction < 1:
        s.fail("router_fraction", f"must be in (0, 1), got {c.router_fraction}")
    if not 0 < c.router_holdout < 1:
        s.fail("router_holdout", f"must be in (0, 1), got {c.router_holdout}")
    s.greater("router_l2", 0.0)
    s.at_least("samples", 1)
    if c.toxicity_scorer and ":" not in c.toxicity_scorer:
        s.fail("toxicity_scorer", f"{c.toxicity_scorer!r} is not module:function")


def _needs_of_routing(s: Section, c: ml_collections.ConfigDict) -> None:
    if c.routing == "fixed" and not c.route_table:
        s.fail("route_table", "fixed routing needs language=teacher entries")
    if c.routing == "single" and not c.single_teacher:
        s.fail("single_teacher", "single routing needs the teacher's name")
    if c.routing in ("reward", "learned") and not (c.reward_model or c.judge):
        s.fail(
            "reward_model", f"{c.routing} routing scores every teacher's reply with a reward run (or a judge)"
        )
    if c.routing == "learned" and not c.embed_checkpoint:
        s.fail("embed_checkpoint", "the learned router reads a model's mean-pooled prompt states")


def _needs_of_attributes(s: Section, c: ml_collections.ConfigDict) -> None:
    try:
        weights = attribute_weights(c.attributes)
    except ValueError as e:
        s.fail("attributes", str(e))
    if not weights:
        s.fail("attributes", "no attribute to select by")
    if "toxicity" in weights and not (c.lexicon_dir or c.toxicity_scorer):
        s.fail("lexicon_dir", "the toxicity attribute needs the LDNOOBW folder (or a toxicity_scorer)")
