"""`config.data.task` resolved: unknown names, and what a name reads without registering anything."""

import pytest

from aya_jax.data import catalog, registry


def test_unknown_task_is_one_line_listing_registered_names(data_config):
    data_config.task = "aya_defualt"
    with pytest.raises(ValueError) as info:
        registry.get_task_or_mixture(data_config)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config.data.task: 'aya_defualt' is not a registered seqio task or mixture")
    assert "aya_default" in message


def test_selections_of_the_default_data_and_of_an_unknown_name(data_config):
    (chosen,) = registry.selections(data_config, catalog.EMBEDDED)
    assert chosen.source.name == catalog.EMBEDDED and chosen.languages is None and chosen.where == {}
    assert chosen.rows_per_language() == chosen.source.rows_per_language()
    with pytest.raises(ValueError, match="not the default data, a catalog task or a gin mixture"):
        registry.selections(data_config, "no_such_task")
