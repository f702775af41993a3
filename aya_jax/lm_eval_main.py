"""`aya-lm-eval`: lm-evaluation-harness's own command line, with the `aya_jax` model registered first.

    aya-lm-eval --model aya_jax --model_args checkpoint=workdirs/quickstart,config=configs/quickstart.py --tasks global_mmlu_full_fr

Every argument is lm-eval's (`lm_eval --help`); this entry point only imports the adapter
(aya_jax/evaluation/harness.py), because lm-eval 0.4 looks models up in its own registry, which a package can
join only by being imported, and offers no plugin entry point."""

from lm_eval.__main__ import cli_evaluate

from aya_jax.evaluation import harness  # noqa: F401 - registers the "aya_jax" model


def main() -> None:
    cli_evaluate()


if __name__ == "__main__":
    main()
