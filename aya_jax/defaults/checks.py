"""The checks a config section runs next to its defaults: each failure is a `ConfigError` whose one line names
the field (`config.<section>.<field>: ...`), raised before anything is loaded or compiled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with the field's full name."""


class Section:
    """Checks on one section: `s = Section(config.dpo, "dpo"); s.at_least("iterations", 0)`."""

    def __init__(self, values: Any, name: str):
        self.values, self.name = values, name

    def field(self, field: str) -> str:
        return f"config.{self.name}.{field}"

    def fail(self, field: str, message: str) -> None:
        raise ConfigError(f"{self.field(field)}: {message}")

    def at_least(self, field: str, low: float, why: str = "") -> None:
        value = self.values[field]
        if not value >= low:
            self.fail(field, f"must be >= {low}{why}, got {value}")

    def greater(self, field: str, low: float, why: str = "") -> None:
        value = self.values[field]
        if not value > low:
            self.fail(field, f"must be > {low}{why}, got {value}")

    def in_range(self, field: str, low: float, high: float, *, high_open: bool = False) -> None:
        value = self.values[field]
        ok = low <= value < high if high_open else low <= value <= high
        if not ok:
            self.fail(field, f"must be in [{low}, {high}{')' if high_open else ']'}, got {value}")

    def one_of(self, field: str, options: Iterable[Any]) -> None:
        options = tuple(options)
        value = self.values[field]
        if value not in options:
            self.fail(field, f"{value!r} is not one of {', '.join(map(str, options))}")

    def one_checkpoint(self) -> None:
        """Exactly one of hf_dir and checkpoint_dir: what a section that loads a model for inference reads."""
        if bool(self.values.hf_dir) == bool(self.values.checkpoint_dir):
            self.fail(
                "hf_dir",
                "set exactly one of hf_dir (a Hugging Face directory) and checkpoint_dir (an aya_jax workdir or its "
                f"checkpoints/); got hf_dir={self.values.hf_dir!r}, checkpoint_dir={self.values.checkpoint_dir!r}",
            )

    def sampling(self, *, sampled: str = "") -> None:
        """The sampling fields a section shares (max_new_tokens, temperature, top_k, top_p). `sampled`: the
        reason the temperature must be > 0 (a section that draws several samples per prompt), else 0 = greedy."""
        self.at_least("max_new_tokens", 1)
        if sampled:
            self.greater("temperature", 0.0, f" ({sampled})")
        else:
            self.at_least("temperature", 0.0, " (0 = greedy)")
        self.at_least("top_k", 0)
        if not 0 < self.values.top_p <= 1:
            self.fail("top_p", f"must be in (0, 1], got {self.values.top_p}")
