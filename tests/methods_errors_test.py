"""Bad method arguments fail early, saying what was received and expected."""

import keras
import pytest

import kerameta


def _net():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    hidden = keras.layers.BatchNormalization(name="norm")(hidden)
    hidden = keras.layers.Activation("relu", name="relu")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, name="hidden")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.hidden(x))


def _subclassed():
    model = _Subclassed()
    model(keras.ops.zeros((1, 4)))
    return model


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"adapted_layers": ["hed"]}, r"not in the model.*\['hed'\]"),
        ({"adapted_layers": "head"}, "must be a list of layer names"),
        ({"adapted_layers": ["relu"]}, "'relu'.*has no trainable weights"),
        (
            {"adapted_layers": ["norm"], "adapt_batch_normalization": False},
            "no weights to adapt",
        ),
        ({"inner_optimizer": "adam"}, r"Unknown `inner_optimizer`.*'adam'"),
        ({"task_weighting": "agreement"}, r"Unknown `task_weighting`"),
        (
            {"gradient_sharing": "yes"},
            r"Unknown `gradient_sharing`\. Expected None, one of "
            r"\['gradient_sharing'\] or a `kerameta\.GradientSharing`",
        ),
        (
            {"co_learner": "cml"},
            r"Unknown `co_learner`\. Expected None, a `kerameta\.CoLearner` "
            r"instance\. Received: co_learner='cml'",
        ),
    ],
)
def test_bad_method_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kerameta.MAML(_net(), **kwargs)


def test_adapted_layers_lists_the_layers_with_weights():
    with pytest.raises(ValueError, match=r"\['hidden', 'norm', 'head'\]"):
        kerameta.MAML(_net(), adapted_layers=["body"])


def test_batch_normalization_is_adapted_unless_turned_off():
    adapted = kerameta.MAML(_net()).adapted_variables
    frozen = kerameta.MAML(
        _net(), adapt_batch_normalization=False
    ).adapted_variables
    assert len(adapted) == 6
    assert [v.path.split("/")[0] for v in frozen] == ["hidden"] * 2 + [
        "head"
    ] * 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"history_decay": 1.0}, r"`history_decay` must be .*< 1.0"),
        ({"history_decay": -0.1}, r"`history_decay` must be .*>= 0.0"),
        ({"concurrent": "others"}, r"`concurrent` must be one of"),
        ({"granularity": "layer"}, r"`granularity` must be one of"),
        ({"steps": 0}, "`steps` must be a positive integer"),
        ({"evaluation_sharing": "off"}, "`evaluation_sharing` must be one"),
        ({"concurrent_initial": float("nan")}, "must be a finite number"),
    ],
)
def test_bad_gradient_sharing_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kerameta.GradientSharing(**kwargs)


def test_bad_gradient_agreement_arguments():
    with pytest.raises(ValueError, match="`form` must be one of"):
        kerameta.GradientAgreement(form="cosine")
    with pytest.raises(ValueError, match="`apply_to` must be one of"):
        kerameta.GradientAgreement(apply_to="co_learner")
    with pytest.raises(ValueError, match="`epsilon` must be"):
        kerameta.GradientAgreement(epsilon=-1.0)


def test_co_learner_feature_layer_must_exist():
    head = keras.layers.Dense(3)
    with pytest.raises(ValueError, match=r"'hiden' is not a layer.*'hidden'"):
        kerameta.MAML(_net(), co_learner=kerameta.CoLearner(head, "hiden"))


def test_co_learner_needs_a_layer_graph():
    co_learner = kerameta.CoLearner(keras.layers.Dense(3), "hidden")
    with pytest.raises(ValueError, match="subclassed.*no layer graph"):
        kerameta.MAML(_subclassed(), co_learner=co_learner)


def test_co_learner_head_must_take_the_features():
    head = keras.layers.Conv2D(4, 3)
    with pytest.raises(
        ValueError, match=r"cannot take the output.*\(None, 8\)"
    ):
        kerameta.MAML(_net(), co_learner=kerameta.CoLearner(head, "hidden"))


def test_co_learner_head_must_predict_like_the_network():
    head = keras.layers.Dense(5)
    with pytest.raises(ValueError, match=r"\(None, 5\).*\(None, 3\)"):
        kerameta.MAML(_net(), co_learner=kerameta.CoLearner(head, "hidden"))


def test_bad_co_learner_arguments():
    with pytest.raises(ValueError, match="`loss_weight` must be .*>= 0.0"):
        kerameta.CoLearner(keras.layers.Dense(3), "hidden", loss_weight=-1)
    with pytest.raises(TypeError, match="`head` must be a Keras layer"):
        kerameta.CoLearner(lambda x: x, "hidden")
    with pytest.raises(ValueError, match="`feature_layer` must be the name"):
        kerameta.CoLearner(keras.layers.Dense(3), 2)


def test_without_co_learner_needs_one():
    with pytest.raises(ValueError, match="no co-learner to remove"):
        kerameta.MAML(_net()).without_co_learner()


def test_reptile_refuses_learned_inner_rates_and_meta_gradients():
    with pytest.raises(ValueError, match="Meta-SGD's rates.*would never"):
        kerameta.Reptile(_net(), inner_optimizer="meta_sgd")
    with pytest.raises(ValueError, match="takes no `meta_gradient`"):
        kerameta.Reptile(_net(), meta_gradient="second_order")


def test_reptile_keeps_sharing_scales_fixed():
    reptile = kerameta.Reptile(
        _net(), gradient_sharing=kerameta.GradientSharing(concurrent_initial=1)
    )
    trainable = {id(v) for v in reptile.trainable_variables}
    sharing = reptile.gradient_sharing
    assert not trainable & {
        id(v) for v in sharing.concurrent_scales + sharing.history_scales
    }


@pytest.mark.parametrize(
    "argument, identifier, cls",
    [
        ("inner_optimizer", "sgd", kerameta.inner_optimizers.SGD),
        ("inner_optimizer", "meta_sgd", kerameta.MetaSGD),
        ("task_weighting", "mean", kerameta.TaskWeighting),
        ("task_weighting", "gradient_agreement", kerameta.GradientAgreement),
        ("gradient_sharing", "gradient_sharing", kerameta.GradientSharing),
    ],
)
def test_string_ids(argument, identifier, cls):
    meta = kerameta.MAML(_net(), **{argument: identifier})
    component = getattr(meta, argument)
    assert type(component) is cls
    assert component.string_id == identifier
