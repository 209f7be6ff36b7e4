"""`summary()` of a meta-model: the inner optimizer's row reads sensibly.

The inner optimizer is a layer of the meta-model (it may own meta-learned
weights), so Keras lists it. Its row shows the shapes of the weights it
steps (its output: the fast weights), not "?", and counts its own weights:
none for SGD, one learning rate per adapted parameter for Meta-SGD.
"""

import json
import zipfile

import keras
import numpy as np

import kerameta


def _summary(maml) -> list[str]:
    lines = []
    # A wide shape column, so that no row wraps (the console is 80 wide).
    maml.summary(
        line_length=80,
        positions=[0.3, 0.85, 1.0],
        print_fn=lambda line, **kwargs: lines.append(line),
    )
    return "\n".join(lines).splitlines()


def _row(lines, name) -> str:
    rows = [line for line in lines if line.startswith(f"│ {name} (")]
    assert len(rows) == 1, lines
    return rows[0]


def _cells(row) -> list[str]:
    return [cell.strip() for cell in row.strip("│").split("│")]


def _mlp(hidden=None):
    layers = [keras.Input((1,))]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="relu"))
    layers.append(keras.layers.Dense(1, name="head"))
    return keras.Sequential(layers)


def test_sgd_row_shows_the_stepped_shapes_and_no_weights():
    maml = kerameta.MAML(_mlp(), inner_optimizer="sgd")
    lines = _summary(maml)
    name = maml.inner_optimizer.name
    assert _cells(_row(lines, name)) == [f"{name} (SGD)", "[(1, 1), (1)]", "0"]
    assert not any("?" in line for line in lines)
    assert any("Total params: 2 " in line for line in lines)


def test_meta_sgd_rates_show_and_count():
    maml = kerameta.MAML(_mlp(hidden=3), inner_optimizer="meta_sgd")
    lines = _summary(maml)
    name = maml.inner_optimizer.name
    # 1*3 + 3 + 3*1 + 1 = 10 weights, one learning rate each.
    assert _cells(_row(lines, name)) == [
        f"{name} (MetaSGD)",
        "[(1, 3), (3), (3, 1), (1)]",
        "10",
    ]
    assert any("Trainable params: 20 " in line for line in lines)
    assert not any("?" in line for line in lines)


def test_anil_row_lists_only_the_adapted_weights():
    maml = kerameta.MAML(
        _mlp(hidden=3), inner_optimizer="meta_sgd", adapted_layers=["head"]
    )
    lines = _summary(maml)
    name = maml.inner_optimizer.name
    assert _cells(_row(lines, name))[1:] == ["[(3, 1), (1)]", "4"]


def test_saved_file_and_reload_are_unchanged(tmp_path):
    maml = kerameta.MAML(_mlp(hidden=3), inner_optimizer="meta_sgd")
    rates = [
        np.full(v.shape, 0.25 + i, "float32")
        for i, v in enumerate(maml.inner_optimizer.rates)
    ]
    for variable, value in zip(maml.inner_optimizer.rates, rates):
        variable.assign(value)
    path = tmp_path / "maml.keras"
    maml.save(path)
    # The inner optimizer is built by the meta-model, not from a build
    # config in the file.
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert "build_config" not in config["config"]["inner_optimizer"]
    loaded = keras.saving.load_model(path)
    for variable, value in zip(loaded.inner_optimizer.rates, rates):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable), value
        )
    name = loaded.inner_optimizer.name
    assert _cells(_row(_summary(loaded), name))[1:] == [
        "[(1, 3), (3), (3, 1), (1)]",
        "10",
    ]
