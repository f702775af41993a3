"""`config.data.task`, resolved: the seqio task or mixture it names (`get_task_or_mixture`, registering it
first), or the rows it reads without registering anything (`selections`, for vocabulary training and
statistics).

`get_task_or_mixture` takes a name to be, in this order: the embedded default data (`tasks.DEFAULT_TASK`), a
task or mixture the user's own code registered, a mixture defined in gin (`mixtures`), or a task over the
folders the config names (`catalog`); `selections` knows the same kinds but the user's own.

Why a module of its own: resolving a name is the one step that needs every kind of name, so it has to sit
above all the modules that define them. In the data package's one import direction (see `aya_jax.data`) it
comes after `mixtures` (which itself builds on `catalog` and `tasks`) and before `pipeline`, which calls it.
Kept out of `mixtures`, which is about gin mixtures and their sampling, and out of `pipeline`, so that a job
that only reads rows (`train_vocab`) need not import the trainers' batch interface.
"""

import difflib

import seqio

from aya_jax.data import catalog, mixtures, tasks


def get_task_or_mixture(data_config) -> seqio.Task | seqio.Mixture:
    """The seqio task or mixture `config.data.task` names, registering it first if it is the default task, a
    mixture defined in gin (`mixtures`), or a task over the folders the config names (`catalog`)."""
    name = data_config.task
    registered = name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names()
    if name == tasks.DEFAULT_TASK:
        tasks.register_default_task(data_config)
    elif registered and not catalog.registered_here(name) and mixtures.mixture_info(name) is None:
        pass  # registered by the user's own code: used as it is
    elif mixtures.is_mixture(name, data_config):
        mixtures.register_mixture(name, data_config)
    else:
        catalog.register_task(name, data_config)
    if name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
        return seqio.get_mixture_or_task(name)
    known = sorted(
        {
            *seqio.TaskRegistry.names(),
            *seqio.MixtureRegistry.names(),
            tasks.DEFAULT_TASK,
            *mixtures.builtin_mixtures(),
        }
    )
    close = difflib.get_close_matches(name, [*known, *catalog.example_names()], n=5)
    shown = known if len(known) <= 20 else [*close, f"... ({len(known)} in all)"]
    raise ValueError(
        f"config.data.task: {name!r} is not a registered seqio task or mixture; registered: {', '.join(shown)}"
    )


def selections(data_config, name: str | None = None) -> list[catalog.Selection]:
    """What `config.data.task` (or `name`) reads, without registering anything: the default data, a catalog
    task, or a gin mixture's sources and languages (for vocabulary training and statistics)."""
    name = name or data_config.task
    # As in `get_task_or_mixture`, the default data's name means the default data whatever gin binds.
    spec = None if name == catalog.EMBEDDED else mixtures.load_spec(name, data_config)
    if spec is not None:
        langs = None if spec.languages == "all" else tuple(spec.languages)
        found = [catalog.get_source(data_config, s) for s in spec.sources]
        chosen = [catalog.Selection(src, langs, {}) for src in found if src is not None]
        if not chosen:
            raise FileNotFoundError(f"{name}: none of its sources ({', '.join(spec.sources)}) has data")
        return chosen
    chosen = catalog.selection(data_config, name)
    if chosen is None:
        raise ValueError(
            f"config.data.task: {name!r}: not the default data, a catalog task or a gin mixture, so its files "
            "are unknown here"
        )
    return [chosen]
