"""A meta-model's config: what `get_config` writes and `from_config` reads.

The wrapped network, its build config, the settings and each component
(serialized by its family, see `kerameta.src.registry`).
"""

from typing import Any

import keras

from kerameta.src import co_learners
from kerameta.src import gradient_sharing as gradient_sharing_lib
from kerameta.src import inner_optimizers
from kerameta.src import meta_gradients
from kerameta.src import outer_rules
from kerameta.src import task_weightings


def meta_model_config(meta) -> dict[str, Any]:
    """The config of `meta` (a `MetaModel`), for `.keras` files."""
    return {
        "name": meta.name,
        "trainable": meta.trainable,
        "model": keras.saving.serialize_keras_object(meta.model),
        "model_build_config": meta.model.get_build_config(),
        "inner_steps": meta.inner_steps,
        "inner_learning_rate": meta.inner_learning_rate,
        "evaluation_inner_steps": meta._evaluation_inner_steps,
        "meta_gradient": meta_gradients.serialize(meta.meta_gradient),
        "vectorize_tasks": meta._vectorize_option,
        "inner_optimizer": inner_optimizers.serialize(meta.inner_optimizer),
        "adapted_layers": meta.adapted_layers,
        "adapt_batch_normalization": meta.adapt_batch_normalization,
        "gradient_sharing": gradient_sharing_lib.serialize(
            meta.gradient_sharing
        ),
        "task_weighting": task_weightings.serialize(meta.task_weighting),
        "co_learner": co_learners.serialize(meta.co_learner),
        "outer_rule": outer_rules.serialize(meta.outer_rule),
        "unroll_inner_loop": meta.unroll_inner_loop,
        "accumulate_tasks": meta.accumulate_tasks,
    }


def meta_model_from_config(cls, config: dict[str, Any], custom_objects=None):
    """A `cls` meta-model from `meta_model_config`'s output."""
    config = dict(config)
    model = keras.saving.deserialize_keras_object(
        config.pop("model"), custom_objects=custom_objects
    )
    build_config = config.pop("model_build_config", None)
    if not model.built and build_config:
        model.build_from_config(build_config)
    for key, family in (
        ("meta_gradient", meta_gradients),
        ("outer_rule", outer_rules),
    ):
        if isinstance(config.get(key), dict):
            config[key] = family.deserialize(config[key])
    return cls(model=model, **config)
