"""Language-level mixtures, defined in gin, registered as seqio Mixtures with exactly resumable sampling.

A mixture is a `mixture_spec` bound in a gin scope named after it (`gin/aya23_sft.gin`):

    aya23_sft/mixture_spec.languages = ["ara", "zho", ...]       # any ISO 639-1/639-3 codes, or "all"
    aya23_sft/mixture_spec.sources = {"aya_dataset": 1.0, "aya_collection": 1.0}   # see `catalog`
    aya23_sft/mixture_spec.rate = "temperature"                  # proportional | temperature | weights
    aya23_sft/mixture_spec.temperature = 3.3333333333333335      # mT5's T = 1/0.3
    aya23_sft/mixture_spec.maximum = None                        # cap on a language's rows, before T
    aya23_sft/mixture_spec.language_weights = None               # {"ara": 2.0, ...} for rate = "weights"

`config.data.task = "aya23_sft"` parses `gin/aya23_sft.gin`, then `config.data.gin_files`, then
`config.data.gin_bindings` (later bindings win), so rates change without touching Python; a mixture of your
own is a gin file binding `<your_name>/mixture_spec.*`. `config.data.mixture_temperature > 0` overrides the
temperature (and makes the rate "temperature"). Every binding must reach a mixture: one whose scope is neither
the mixture being loaded nor one a gin file defines (a typo such as `aya23_sfT/...`), one without a scope, or one
naming a parameter `mixture_spec` lacks is an error naming the binding, not a setting gin silently ignores.

Rates. With n[s][L] the train rows of language L in source s and m_L = min(sum_s n[s][L], maximum):

    proportional:  p(L) ∝ m_L
    temperature:   p(L) ∝ m_L ** (1 / T)        (seqio's `mixing_rate_num_examples`, per language)
    weights:       p(L) ∝ language_weights[L]

and within a language each source gets its share of that language's rows, weighted by the source's weight:
p(s, L) = p(L) * w_s n[s][L] / sum_s' w_s' n[s'][L].

Sampling, exactly resumable. For each source the mixture registers one task, `<mixture>.<source>` (e.g.
`aya23_sft.aya_dataset`), whose rows are drawn language by language inside the source: draw i picks language
`searchsorted(cdf, u_i)`, with u_i from the counter-based Philox generator keyed by (seed, host, i // 1024),
and takes that language's next row; each language walks its rows in a fresh seeded permutation every epoch
(rows are read once per process, grouped by language: `sources.grouped_rows`; sources too large for that
are re-read per language and epoch, in file order, and only the task's shuffle buffer mixes them). The seqio Mixture then
mixes the sources with `sample_from_datasets` below (the same counter-based choice, at rate
p(s) = sum_L p(s, L)), instead of tf.data's stateful sampler. Because the source choice and the language
choice are independent, a row of (s, L) is drawn with probability p(s) p(L | s) = p(s, L). The whole stream
is a pure function of the seed and the host, so the trainer's resume (rebuild, skip the consumed rows:
`pipeline.TrainIterator`) lands exactly where it stopped.

Why not one seqio task per (source, language), mixed by seqio? That is the textbook layout, and it was the
first version here: but each task is its own tf.data pipeline, and tracing ~10 functions for each of 114 or
202 tasks took 30-60 s at every start, resume and eval set-up, and filling one shuffle buffer per language
delayed the first batch further. One pipeline per source keeps start-up at a second or two.

A language with no rows on a host (fewer rows than hosts) is skipped there: that host's draws of it go to
the next language in the list, a small distortion of that host's rates (the global rates stay close).

In the data package's one import direction (see `aya_jax.data`) this module sits above `catalog` and `tasks`,
whose sources and tasks it mixes; `registry` (which turns `config.data.task` into a task or mixture) and
`pipeline` build on it.
"""

import dataclasses
import inspect
import itertools
import logging
import os
import pathlib

import gin
import numpy as np
import seqio
import tensorflow as tf

from aya_jax.data import catalog, languages, sources, tasks

log = logging.getLogger(__name__)

GIN_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin"
RATES = ("proportional", "temperature", "weights")
MT5_TEMPERATURE = 1 / 0.3
_CHOICE_BLOCK = 1024  # choices drawn per Philox key


@dataclasses.dataclass(frozen=True)
class MixtureSpec:
    name: str
    languages: tuple[str, ...] | str  # ISO 639-3 codes, or "all"
    sources: dict[str, float]
    rate: str
    temperature: float
    maximum: int | None
    language_weights: dict[str, float] | None


@gin.configurable("mixture_spec", module="aya_jax.data.mixtures")
def mixture_spec(
    languages=gin.REQUIRED,
    sources=gin.REQUIRED,
    rate: str = "temperature",
    temperature: float = MT5_TEMPERATURE,
    maximum: int | None = None,
    language_weights: dict | None = None,
) -> MixtureSpec:
    """A mixture's composition (bound in gin, in the scope of the mixture's name)."""
    name = gin.current_scope_str()
    if rate not in RATES:
        raise ValueError(f"{name}/mixture_spec.rate={rate!r}: expected one of {', '.join(RATES)}")
    if rate == "temperature" and not temperature > 0:
        raise ValueError(f"{name}/mixture_spec.temperature={temperature!r}: expected > 0")
    if rate == "weights" and not language_weights:
        raise ValueError(f"{name}/mixture_spec.language_weights: rate 'weights' needs a weight per language")
    unknown = sorted(set(sources) - set(catalog.SOURCES) - {catalog.EMBEDDED})
    if unknown:
        raise ValueError(
            f"{name}/mixture_spec.sources: unknown source(s) {unknown}; known: "
            f"{', '.join([*catalog.SOURCES, catalog.EMBEDDED])}"
        )
    codes = languages if languages == "all" else tuple(_code(c, name, "languages") for c in languages)
    weights = {_code(c, name, "language_weights"): float(w) for c, w in (language_weights or {}).items()}
    return MixtureSpec(
        name=name,
        languages=codes,
        sources={k: float(v) for k, v in sources.items()},
        rate=rate,
        temperature=float(temperature),
        maximum=int(maximum) if maximum else None,
        language_weights=weights or None,
    )


def _code(code: str, name: str, field: str) -> str:
    try:
        return languages.lookup(code).iso639_3
    except ValueError as e:
        raise ValueError(f"{name}/mixture_spec.{field}: {e}") from None


def builtin_mixtures() -> list[str]:
    return sorted(p.stem for p in GIN_DIR.glob("*.gin")) if GIN_DIR.is_dir() else []


# ---- checking gin's input: bindings that would name nothing -------------------------------------------------

# Every name gin accepts for the configurable: its full name or a dotted suffix of it.
_SPEC_NAME = "aya_jax.data.mixtures.mixture_spec"
_SPEC_PARAMETERS = tuple(sorted(inspect.signature(mixture_spec).parameters))


class _Placeholders(gin.config_parser.ParserDelegate):
    """Stands in for `@configurable` and `%macro` values: only the binding keys are checked here, and gin's
    own parse resolves the values afterwards."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return None

    def macro(self, macro_name):
        return None


@dataclasses.dataclass(frozen=True)
class _Binding:
    origin: str  # how an error names it, e.g. "config.data.gin_files: mine.gin line 3: '...'"
    scope: str
    selector: str
    arg_name: str


def _statements(text: str, origin: str, path: str | None = None) -> list:
    """gin's statements in `text`; a syntax error is one line naming `origin` (and the line, for a file)."""
    try:
        return list(gin.config_parser.ConfigParser(text, _Placeholders()))
    except SyntaxError as e:
        where = f"{path} line {e.lineno}" if path else repr(text.strip())
        raise ValueError(f"{origin}: {where} does not parse: {e.msg}") from None


def _file_bindings(path: str, origin: str, seen: set[str]) -> list[_Binding]:
    """The bindings of gin file `path` and of the files it includes (found as gin finds them: as given, then
    in gin/); an include that is not found is left to gin's own error."""
    if path in seen:
        return []
    seen.add(path)
    found = []
    for st in _statements(pathlib.Path(path).read_text(), origin, path):
        if isinstance(st, gin.config_parser.BindingStatement):
            line = st.location.line_content.strip()
            found.append(_Binding(f"{origin}: {path} line {st.location.line_num}: {line!r}", *st[:3]))
        elif isinstance(st, gin.config_parser.IncludeStatement):
            for candidate in (st.filename, str(GIN_DIR / st.filename)):
                if os.path.isfile(candidate):
                    found += _file_bindings(candidate, origin, seen)
                    break
    return found


def _check_bindings(name: str, own_file: str | None, data_config) -> None:
    """Refuse every binding that gin would accept but that cannot change mixture `name`, the ones it would
    silently ignore: a scope no mixture defines (a misspelt mixture name), no scope at all (the mixture's own
    scoped binding wins over it), or another configurable. A parameter `mixture_spec` lacks is an error in
    gin too, but a three-line one; here it is one line naming the binding, like the others."""
    bindings = []
    if own_file:  # the mixture's own gin/<name>.gin: named by its path, it is no config field
        bindings += _file_bindings(own_file, "the mixture's own gin file", set())
    for f in data_config.gin_files:
        bindings += _file_bindings(str(f), "config.data.gin_files", set())
    for text in data_config.gin_bindings:
        for st in _statements(text, "config.data.gin_bindings"):
            if isinstance(st, gin.config_parser.BindingStatement):
                bindings.append(_Binding(f"config.data.gin_bindings: {text.strip()!r}", *st[:3]))
    bindings = [b for b in bindings if b.arg_name]  # `X = value` defines a macro: it binds no parameter
    # The mixtures: the task itself, gin/<mixture>.gin, and the scopes in which a gin file binds `sources`
    # (what makes a mixture, see `load_spec`; a file that only sets a typo'd scope's temperature defines none).
    defined = {name, *builtin_mixtures()}
    defined |= {
        b.scope
        for b in bindings
        if b.arg_name == "sources" and b.scope and not b.origin.startswith("config.data.gin_bindings")
    }
    known = ", ".join(sorted(defined))
    for b in bindings:
        if not (b.selector == _SPEC_NAME or _SPEC_NAME.endswith("." + b.selector)):
            raise ValueError(
                f"{b.origin} binds {b.selector!r}, which is not mixture_spec: only mixtures are configured in gin"
            )
        if not b.scope:
            raise ValueError(
                f"{b.origin} binds no scope; a mixture's own bindings would win over it: bind "
                f"'<mixture>/mixture_spec.{b.arg_name}' (known: {known})"
            )
        if b.scope not in defined:
            raise ValueError(f"{b.origin} binds scope {b.scope!r}, which no mixture defines (known: {known})")
        if b.arg_name not in _SPEC_PARAMETERS:
            raise ValueError(
                f"{b.origin} binds {b.arg_name!r}, which is not a parameter of mixture_spec "
                f"(known: {', '.join(_SPEC_PARAMETERS)})"
            )


def _one_line(e: Exception) -> str:
    """gin's error messages add lines (where it was parsing, which configurable it called): joined here."""
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip() not in ("", "^"))


_search_path_added = False  # gin.clear_config keeps search paths: add gin/ once, not once per load


def load_spec(name: str, data_config) -> MixtureSpec | None:
    """The spec of mixture `name` from gin (its own file, then the config's files and bindings); None if
    nothing binds `<name>/mixture_spec`. Gin's global configuration is cleared first: the data package is
    its only user, and each load then starts from the same files."""
    files = [str(GIN_DIR / f"{name}.gin")] if (GIN_DIR / f"{name}.gin").is_file() else []
    files += [str(f) for f in data_config.gin_files]
    bindings = list(data_config.gin_bindings)
    if not files and not bindings:
        return None
    for f in files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"config.data.gin_files: no gin file at {f}")
    _check_bindings(name, files[0] if (GIN_DIR / f"{name}.gin").is_file() else None, data_config)
    global _search_path_added
    with gin.unlock_config():
        gin.clear_config()
        if GIN_DIR.is_dir() and not _search_path_added:
            gin.add_config_file_search_path(str(GIN_DIR))
            _search_path_added = True
        try:
            gin.parse_config_files_and_bindings(files, bindings)
        except (ValueError, SyntaxError, ImportError, OSError) as e:  # imports, includes, macros: gin's own
            raise ValueError(f"config.data.gin_files/gin_bindings: {_one_line(e)}") from None
    try:
        gin.query_parameter(f"{name}/mixture_spec.sources")
    except ValueError:
        return None
    with gin.config_scope(name):
        try:
            spec = mixture_spec()
        except (ValueError, RuntimeError) as e:  # gin appends "In call to configurable ..." to our messages
            message = _one_line(e).split("; In call to configurable")[0]
            raise ValueError(
                message if message.startswith(f"{name}/") else f"{name}/mixture_spec: {message}"
            ) from None
    if data_config.mixture_temperature and data_config.mixture_temperature > 0:
        if spec.rate == "weights":
            log.warning("%s: config.data.mixture_temperature replaces the explicit language weights", name)
        spec = dataclasses.replace(
            spec, rate="temperature", temperature=float(data_config.mixture_temperature)
        )
    return spec


def is_mixture(name: str, data_config) -> bool:
    return load_spec(name, data_config) is not None


def language_rates(
    spec: MixtureSpec, rows: dict[str, dict[str, int]]
) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """(p(L) per language, p(s, L) per (source, language)) for `rows[source][language]` (module docstring);
    both normalised to sum to 1. Languages without rows in any source are left out (with a warning)."""
    present = sorted({lang for per_lang in rows.values() for lang, n in per_lang.items() if n > 0})
    wanted = present if spec.languages == "all" else list(dict.fromkeys(spec.languages))
    missing = [lang for lang in wanted if lang not in present]
    if missing:
        log.warning(
            "%s: no rows in %s for %d language(s), left out: %s",
            spec.name,
            "/".join(rows),
            len(missing),
            " ".join(missing),
        )
    kept = [lang for lang in wanted if lang in present]
    if not kept:
        raise ValueError(f"{spec.name}: none of its languages has rows in its sources ({', '.join(rows)})")
    mass = {}
    for lang in kept:
        m = sum(per_lang.get(lang, 0) for per_lang in rows.values())
        m = min(m, spec.maximum) if spec.maximum else m
        if spec.rate == "proportional":
            mass[lang] = float(m)
        elif spec.rate == "temperature":
            mass[lang] = float(m) ** (1.0 / spec.temperature)
        else:
            mass[lang] = (spec.language_weights or {}).get(lang, 0.0)
    if spec.rate == "weights":
        extra = sorted(set(spec.language_weights) - set(kept))
        if [lang for lang in extra if spec.language_weights[lang] > 0]:
            raise ValueError(
                f"{spec.name}/mixture_spec.language_weights: no rows for weighted language(s) {extra}"
            )
    total = sum(mass.values())
    if not total > 0:
        raise ValueError(f"{spec.name}: every language has rate 0")
    p_lang = {lang: mass[lang] / total for lang in kept if mass[lang] > 0}
    p_task = {}
    for lang, p in p_lang.items():
        weighted = {s: spec.sources[s] * rows[s].get(lang, 0) for s in rows}
        denominator = sum(weighted.values())
        for s, w in weighted.items():
            if w > 0:
                p_task[(s, lang)] = p * w / denominator
    return p_lang, p_task


# ---- sampling ----------------------------------------------------------------------------------------------


def uniform_block(seed: int, stream: int, block: int) -> np.ndarray:
    """The `block`-th 1024 uniforms of Philox keyed by (seed, stream): a pure function of its arguments."""
    # Philox's counter is 4 x 64 bits and a draw advances its lowest word: the block goes in the second word,
    # so blocks never share counter values (with the block in the lowest word, block b + 1 would replay all
    # but the first 4 of block b's uniforms, shifted).
    generator = np.random.Generator(
        np.random.Philox(key=[seed % 2**63, stream % 2**63], counter=[0, block, 0, 0])
    )
    return generator.random(_CHOICE_BLOCK)  # [1024] in [0, 1)


def sample_from_datasets(datasets, weights, seed, stop_on_empty_dataset: bool = False) -> tf.data.Dataset:
    """seqio's `sample_fn` contract (`(datasets, rates, seed)`), with a counter-based choice stream: choice i
    depends only on (seed, i). Exhausted inputs are skipped; the stream ends when all are."""
    weights = np.asarray([float(w) for w in weights], np.float64)
    if len(weights) != len(datasets) or (weights < 0).any() or not weights.sum() > 0:
        raise ValueError(f"sample_from_datasets: bad weights {weights.tolist()} for {len(datasets)} datasets")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") >> 1  # seqio's "no seed": a fresh stream every time
    cdf = np.cumsum(weights / weights.sum())[:-1]  # the last bucket takes everything above

    def block_choices(block_index):
        u = tf.numpy_function(
            lambda b: uniform_block(int(seed), 0, int(b)), [block_index], tf.float64, stateful=False
        )  # [block]
        return tf.searchsorted(
            tf.constant(cdf, tf.float64), tf.reshape(u, [_CHOICE_BLOCK]), side="right", out_type=tf.int64
        )

    choices = tf.data.Dataset.counter().map(block_choices).unbatch()
    return tf.data.Dataset.choose_from_datasets(
        datasets, choices, stop_on_empty_dataset=stop_on_empty_dataset
    )


class _LanguageStream:
    """One language's rows, endlessly: epoch e is a permutation seeded by (seed, language, e), or file order
    without shuffling or for a `_Reread` source. `empty` once an epoch turned out to have no rows."""

    def __init__(self, rows, seed: int, stream: int, shuffle: bool):
        self.rows, self.seed, self.stream, self.shuffle = rows, seed, stream, shuffle
        self.epoch, self.empty = -1, False
        self._iter = iter(())

    def _new_epoch(self):
        self.epoch += 1
        if isinstance(self.rows, _Reread):
            return iter(self.rows.reader)
        n = len(self.rows)
        if not self.shuffle:
            return iter(self.rows)
        key = [self.seed % 2**63, self.stream]
        order = np.random.Generator(np.random.Philox(key=key, counter=[0, self.epoch, 1, 0])).permutation(n)
        return (self.rows[i] for i in order)

    def __next__(self):
        for row in self._iter:
            return row
        self._iter = self._new_epoch()
        for row in self._iter:
            return row
        self.empty = True
        raise StopIteration


def mixed_language_rows(
    rows_by_language: dict[str, object], rates: dict[str, float], *, seed: int, host: int, shuffle: bool
):
    """Endless rows drawn language by language at `rates` (module docstring). `rows_by_language` holds this
    host's rows (lists, or `_Reread`s); a language without any is skipped: its draws go to the next language
    (in sorted order, wrapping around) that has rows. Ends only if no language has rows."""
    langs = sorted(rates)
    weights = np.asarray([rates[lang] for lang in langs], np.float64)
    cdf = np.cumsum(weights / weights.sum())[:-1]
    streams = [
        _LanguageStream(rows_by_language[lang], seed, 1 + i, shuffle) if rows_by_language.get(lang) else None
        for i, lang in enumerate(langs)
    ]
    stream_id = 2**32 + host  # this host's choice stream (language streams use ids 1..len(langs))
    for block in itertools.count():
        for choice in np.searchsorted(cdf, uniform_block(seed, stream_id, block), side="right"):
            for k in range(len(langs)):
                stream = streams[(choice + k) % len(langs)]
                if stream is None or stream.empty:
                    continue
                try:
                    yield next(stream)
                    break
                except StopIteration:
                    continue
            else:
                return  # no language has rows on this host


# ---- registration ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MixtureInfo:
    """What a registered mixture is made of (for statistics)."""

    spec: MixtureSpec
    language_rates: dict[str, float]  # p(L), summing to 1
    pair_rates: dict[tuple[str, str], float]  # (source, language) -> p(s, L), summing to 1
    source_tasks: dict[str, str]  # source -> its task in the mixture
    rows: dict[str, dict[str, int]]  # source -> language -> train rows


_mixtures: dict[str, tuple] = {}
_info: dict[str, MixtureInfo] = {}


def mixture_info(name: str) -> MixtureInfo | None:
    return _info.get(name)


def _mixing_dataset_fn(info: tasks.TaskInfo, rates: dict[str, float]):
    """A `ShardedFunctionDataSource` function: this host's rows of `info`'s source, drawn by language."""
    fields = info.schema.fields

    def dataset_fn(split, shuffle_files, seed=None, shard_index=0, num_shards=1) -> tf.data.Dataset:
        if split not in info.split_files:
            raise ValueError(f"split {split!r} is not one of {sorted(info.split_files)}")
        seed = 42 if seed is None else int(seed)

        def generate():
            reader = info.reader(split, shard_index, num_shards)
            grouped = sources.grouped_rows(reader)
            if grouped is not None:
                by_language = {lang: [row for row, _ in rows] for lang, rows in grouped.items()}
            else:
                by_language = {
                    lang: _Reread(info.reader(split, shard_index, num_shards, language=lang))
                    for lang in rates
                }
            rows = mixed_language_rows(by_language, rates, seed=seed, host=shard_index, shuffle=shuffle_files)
            yield from tasks.row_chunks(rows, fields)

        signature = {field: tf.TensorSpec([None], tf.string) for field in fields}  # [rows]
        return tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()

    return dataset_fn


class _Reread:
    """A language's rows of a source too large to hold in memory: read again (in file order) every epoch."""

    def __init__(self, reader):
        self.reader = reader

    def __bool__(self) -> bool:
        return True  # unknown until read; an empty one is dropped by `_LanguageStream`


def register_mixture(name: str, data_config) -> seqio.Mixture:
    """Register (or re-register, if anything changed) the seqio Mixture `name` and its per-source tasks."""
    spec = load_spec(name, data_config)
    if spec is None:
        raise ValueError(f"config.data.task: {name!r}: no gin file binds {name}/mixture_spec")
    found = {s: catalog.get_source(data_config, s) for s in spec.sources}
    absent = [s for s, src in found.items() if src is None]
    present = {s: src for s, src in found.items() if src is not None}
    if not present:
        fields = ", ".join(f"config.data.{catalog.SOURCES[s][1]}" for s in absent)
        raise FileNotFoundError(f"{name}: none of its sources has data; set {fields}")
    for s in absent:
        log.warning(
            "%s: source %s has no folder (config.data.%s); mixing without it", name, s, catalog.SOURCES[s][1]
        )
    kinds = {tasks.kind_of(src.schema) for src in present.values()}
    if len(kinds) > 1:
        raise ValueError(
            f"{name}/mixture_spec.sources: cannot mix {' and '.join(sorted(kinds))} rows in one mixture"
        )
    rows = {s: src.rows_per_language() for s, src in present.items()}
    p_lang, p_pair = language_rates(spec, rows)
    task_vocab = catalog.vocabulary_for(data_config, list(present.values()))
    components, source_tasks = [], {}
    for s, source in present.items():
        rates = {lang: p for (src, lang), p in p_pair.items() if src == s}
        if not rates:
            continue
        task = catalog.register_source_task(
            data_config,
            source,
            task_vocab,
            name=f"{name}.{s}",
            shuffle_buffer_size=max(
                tasks.MIN_TASK_SHUFFLE_BUFFER, data_config.shuffle_buffer // len(present)
            ),
            mixing_rates=rates,
            dataset_fn_for=lambda info, rates=rates: _mixing_dataset_fn(info, rates),
        )
        components.append((task.name, sum(rates.values())))
        source_tasks[s] = task.name
    signature = (
        tuple(components),
        tuple(sorted(p_pair.items())),
        task_vocab,
        tuple(seqio.TaskRegistry.get(t) for t, _ in components),
    )
    if name in seqio.MixtureRegistry.names():
        if _mixtures.get(name) == signature:
            return seqio.MixtureRegistry.get(name)
        seqio.MixtureRegistry.remove(name)
    mixture = seqio.MixtureRegistry.add(name, components, sample_fn=sample_from_datasets)
    _mixtures[name] = signature
    _info[name] = MixtureInfo(spec, p_lang, p_pair, source_tasks, rows)
    log.info(
        "%s: %d languages from %s (%s%s); top rates: %s",
        name, len(p_lang), "+".join(present), spec.rate,
        f", T={spec.temperature:.3g}" if spec.rate == "temperature" else "",
        ", ".join(f"{lang} {p:.3f}" for lang, p in sorted(p_lang.items(), key=lambda kv: -kv[1])[:8]),
    )  # fmt: skip
    return mixture
