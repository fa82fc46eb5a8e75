"""Suggested layer pairs: stage ends of real architectures, paired and trained."""

import keras
import numpy as np
import pytest

import keras_spkd
from keras_spkd.models import digits_cnn, fashion_cnn, wide_resnet
from keras_spkd.pairs import format_layer_table
from tests.conftest import sparse_ce

SIZE = 32  # keras.applications' smallest input: the 1/32 stage is 1x1.
APPS = {
    "ResNet50V2": keras.applications.ResNet50V2,
    "MobileNetV2": keras.applications.MobileNetV2,
    "EfficientNetB0": keras.applications.EfficientNetB0,
    "DenseNet121": keras.applications.DenseNet121,
}
# Stage ends at 8x8, 4x4, 2x2, 1x1 (1/4 .. 1/32 of the input); 16x16 has no block.
STAGE_ENDS = {
    "ResNet50V2": ["conv2_block2_out", "conv3_block3_out", "conv4_block5_out", "conv5_block3_out"],
    "MobileNetV2": ["block_2_add", "block_5_add", "block_12_add", "block_15_add"],
    "EfficientNetB0": ["block2b_add", "block3b_add", "block5c_add", "block6d_add"],
    "DenseNet121": [
        "conv2_block6_concat",
        "conv3_block12_concat",
        "conv4_block24_concat",
        "conv5_block16_concat",
    ],
}
APP_PAIRS = [
    pytest.param("ResNet50V2", "MobileNetV2", id="ResNet50V2->MobileNetV2"),
    pytest.param("MobileNetV2", "EfficientNetB0", id="MobileNetV2->EfficientNetB0"),
    # ~10 s each: DenseNet121's 427 layers run eagerly.
    pytest.param(
        "DenseNet121", "MobileNetV2", id="DenseNet121->MobileNetV2", marks=pytest.mark.slow
    ),
]


def _application(arch: str, nested: bool, input_shape=(SIZE, SIZE, 3)) -> keras.Model:
    """A keras.applications classifier, or its backbone inside a functional one."""
    build = APPS[arch]
    if not nested:
        return build(weights=None, input_shape=input_shape, classes=10, classifier_activation=None)
    backbone = build(weights=None, include_top=False, input_shape=input_shape, name="backbone")
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    h = keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(h))
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name=f"{arch.lower()}_classifier")


def _resolutions(model: keras.Model, paths) -> list[tuple]:
    """Spatial sizes of the named layers as the model computes them."""
    extractor = keras_spkd.build_feature_extractor(model, paths, include_predictions=False)
    outputs = extractor.outputs
    return [tuple(t.shape[1:3]) for t in outputs]


def _check_pairs_share_resolutions(teacher, student, pairs):
    teacher_sizes = _resolutions(teacher, [t for t, _ in pairs])
    student_sizes = _resolutions(student, [s for _, s in pairs])
    assert teacher_sizes == student_sizes, (pairs, teacher_sizes, student_sizes)
    return teacher_sizes


def _train_one_step(teacher, student, pairs, input_shape=(SIZE, SIZE, 3)):
    """SPDistiller fits one step with `pairs`; returns its history."""
    rng = np.random.default_rng(0)
    x = rng.random((8, *input_shape), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    before = [keras.ops.convert_to_numpy(v) for v in student.trainable_variables]
    distiller = keras_spkd.SPDistiller(teacher, student, layer_pairs=pairs, gamma=10.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), loss=sparse_ce(), run_eagerly=True)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert distiller.layer_pairs == pairs
    assert np.isfinite(history["sp_loss"][0]) and history["sp_loss"][0] > 0
    after = student.trainable_variables
    assert any(not np.allclose(b, keras.ops.convert_to_numpy(a)) for b, a in zip(before, after))
    return history


def test_wide_resnets_give_the_papers_pair_and_train():
    keras.utils.set_random_seed(0)
    teacher, student = wide_resnet(16, 2), wide_resnet(16, 1)
    assert keras_spkd.suggest_layer_pairs(teacher, student) == [("group3", "group3")]
    everything = keras_spkd.suggest_layer_pairs(teacher, student, stages="all")
    assert everything == [("group1", "group1"), ("group2", "group2"), ("group3", "group3")]
    assert _check_pairs_share_resolutions(teacher, student, everything) == [
        (32, 32),
        (16, 16),
        (8, 8),
    ]
    assert keras_spkd.suggest_layer_pairs(teacher, student, stages=2) == everything[1:]
    _train_one_step(teacher, student, everything)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("teacher_arch, student_arch", APP_PAIRS)
def test_applications_pair_stage_ends_of_equal_resolution_and_train(
    teacher_arch, student_arch, nested
):
    keras.utils.set_random_seed(0)
    teacher = _application(teacher_arch, nested)
    student = _application(student_arch, nested)
    prefix = "backbone/" if nested else ""
    expected = [
        (prefix + t, prefix + s) for t, s in zip(STAGE_ENDS[teacher_arch], STAGE_ENDS[student_arch])
    ]
    pairs = keras_spkd.suggest_layer_pairs(teacher, student, stages="all")
    assert pairs == expected
    sizes = _check_pairs_share_resolutions(teacher, student, pairs)
    assert sizes == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert keras_spkd.suggest_layer_pairs(teacher, student) == expected[-1:]
    assert keras_spkd.suggest_layer_pairs(teacher, student, stages=3) == expected[-3:]
    # Every layer pair is trained (stages="all"), so every name is accepted.
    _train_one_step(teacher, student, pairs)


def test_nested_backbone_without_an_input_size_is_measured_through_the_outer_model():
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(None, None, 3), name="backbone"
    )
    assert backbone.get_layer("block_15_add").output.shape[1:3] == (None, None)
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    student = keras.Model(inputs, outputs)
    teacher = wide_resnet(16, 1)  # 32x32, 16x16, 8x8
    # The shared 8x8 stage: MobileNetV2's block_2_add, not its last (1x1) one.
    assert keras_spkd.suggest_layer_pairs(teacher, student) == [("group3", "backbone/block_2_add")]
    with pytest.raises(ValueError, match=r"unknown spatial size.*fixed input shape.*by hand"):
        keras_spkd.suggest_layer_pairs(teacher, backbone)


def _sequential_cnn() -> keras.Sequential:
    """Plain VGG-style Sequential CNN: 28x28 -> 14x14 -> 7x7, fused ReLUs."""
    conv = keras.layers.Conv2D
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            conv(8, 3, padding="same", activation="relu", name="c1"),
            conv(8, 3, padding="same", activation="relu", name="c2"),
            keras.layers.MaxPooling2D(name="p1"),
            conv(16, 3, padding="same", activation="relu", name="c3"),
            conv(16, 3, padding="same", activation="relu", name="c4"),
            keras.layers.MaxPooling2D(name="p2"),
            conv(32, 3, padding="same", activation="relu", name="c5"),
            keras.layers.BatchNormalization(name="head_bn"),
            keras.layers.ReLU(name="head_relu"),  # a head after the last conv stage
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="seq_cnn",
    )


def test_sequential_cnn_uses_the_last_activation_before_each_drop_not_the_head():
    keras.utils.set_random_seed(0)
    teacher, student = _sequential_cnn(), fashion_cnn(width=4)
    pairs = keras_spkd.suggest_layer_pairs(teacher, student, stages="all")
    assert pairs == [("c2", "group1"), ("c4", "group2"), ("c5", "group3")]
    assert _check_pairs_share_resolutions(teacher, student, pairs) == [(28, 28), (14, 14), (7, 7)]
    assert keras_spkd.suggest_layer_pairs(teacher, student) == [("c5", "group3")]
    _train_one_step(teacher, student, pairs, input_shape=(28, 28, 1))


def _post_activation_resnet() -> keras.Model:
    """Residual blocks `Add -> ReLU` (ResNet v1 style) at 16x16 then 8x8."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    for name, stride in (("b1", 1), ("b2", 1), ("b3", 2), ("b4", 1)):
        h = keras.layers.Conv2D(8, 3, stride, padding="same", activation="relu", name=f"{name}_c")(
            x
        )
        shortcut = keras.layers.MaxPooling2D(1, stride, name=f"{name}_skip")(x) if stride > 1 else x
        x = keras.layers.Add(name=f"{name}_add")([shortcut, h])
        x = keras.layers.ReLU(name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="post_act")


def test_describe_layers_marks_post_activation_block_outputs_as_stage_ends():
    model = _post_activation_resnet()
    rows = keras_spkd.describe_layers(model)
    assert [row["path"] for row in rows] == keras_spkd.layer_paths(model)
    assert [row["path"] for row in rows if row["stage_end"]] == ["b2_out", "b4_out"]
    by_path = {row["path"]: row for row in rows}
    assert by_path["b2_add"] == {
        "path": "b2_add",
        "kind": "Add",
        "output_shape": (None, 16, 16, 8),
        "stage_end": False,
    }
    assert by_path["b4_out"]["output_shape"] == (None, 8, 8, 8)
    table = format_layer_table(rows).splitlines()
    assert len(table) == len(rows) + 2 and table[0].startswith("| layer")
    marked = [line.split("|")[1].strip() for line in table if "stage end" in line]
    assert marked == ["b2_out", "b4_out"]
    assert len({len(line) for line in table}) == 1  # aligned columns


def test_describe_layers_of_a_nested_backbone_uses_the_paths_the_distiller_takes():
    model = _application("MobileNetV2", nested=True)
    rows = keras_spkd.describe_layers(model)
    assert [row["path"] for row in rows] == keras_spkd.layer_paths(model)
    ends = [row["path"] for row in rows if row["stage_end"]]
    assert ends == [f"backbone/{name}" for name in STAGE_ENDS["MobileNetV2"]]
    assert {row["kind"] for row in rows} >= {"Functional", "Add", "Conv2D", "Dense"}


def test_models_sharing_no_resolution_pair_by_relative_depth():
    # fashion_cnn at 28x28, 14x14, 7x7; digits_cnn at 8x8, 4x4: deepest with deepest.
    teacher, student = fashion_cnn(width=4), digits_cnn(width=4)
    assert keras_spkd.suggest_layer_pairs(teacher, student, "all") == [
        ("group2", "group1"),
        ("group3", "group2"),
    ]
    assert keras_spkd.suggest_layer_pairs(student, teacher, "all") == [
        ("group1", "group2"),
        ("group2", "group3"),
    ]
    # Shared resolutions win over depth: the WRN's 16x16 stage goes unpaired.
    wrn = wide_resnet(16, 1, input_shape=(16, 16, 3))  # 16x16, 8x8, 4x4
    assert keras_spkd.suggest_layer_pairs(wrn, digits_cnn(width=4), "all") == [
        ("group2", "group1"),
        ("group3", "group2"),
    ]


def test_stages_argument_is_validated():
    teacher, student = digits_cnn(8), digits_cnn(4)
    for bad in ("first", 0, -1, True, 1.5, None):
        with pytest.raises(ValueError, match=r'"last", "all" or an int >= 1'):
            keras_spkd.suggest_layer_pairs(teacher, student, stages=bad)
    with pytest.raises(ValueError, match=r"deepest 3 layer pairs but found 2"):
        keras_spkd.suggest_layer_pairs(teacher, student, stages=3)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")

    def call(self, x):
        return self.conv(x)


def test_models_without_convolutional_stages_raise_saying_how_to_name_layers():
    cnn = digits_cnn(4)
    mlp = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)],
        name="mlp",
    )
    with pytest.raises(ValueError, match=r"no convolutional stages in the student 'mlp'.*by hand"):
        keras_spkd.suggest_layer_pairs(cnn, mlp)
    subclassed = _Subclassed()
    subclassed(np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"teacher 'subclassed'.*no symbolic graph.*by hand"):
        keras_spkd.suggest_layer_pairs(subclassed, cnn)
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3)], name="unbuilt")
    with pytest.raises(ValueError, match=r"keras\.Input.*by hand"):
        keras_spkd.suggest_layer_pairs(cnn, unbuilt)
    # describe_layers still lists an MLP, with no stage end.
    rows = keras_spkd.describe_layers(mlp)
    assert [r["kind"] for r in rows] == ["Dense", "Dense"]
    assert not any(r["stage_end"] for r in rows)


def _op_residual_net(tapped_relu: bool) -> keras.Model:
    """Residuals written `h + x` (symbolic ops, not layers), two blocks of 8x8."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    for name in ("b1", "b2"):
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"{name}_c")(x)
        x = keras.ops.relu(h + x)  # op Add -> op Relu: nothing to tap by name
    if tapped_relu:
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b3_c")(x)
        x = keras.layers.ReLU(name="b3_out")(h + x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="op_resnet")


def test_residuals_written_as_ops_are_found_through_the_layer_after_them():
    model = _op_residual_net(tapped_relu=True)
    rows = keras_spkd.describe_layers(model)
    assert [r["path"] for r in rows] == keras_spkd.layer_paths(model)  # no op in the table
    assert [r["path"] for r in rows if r["stage_end"]] == ["b3_out"]
    # Not the conv activations inside the blocks (they are not block outputs).
    assert keras_spkd.suggest_layer_pairs(model, digits_cnn(4)) == [("b3_out", "group1")]
    with pytest.raises(ValueError, match=r"2 residual merges are symbolic ops.*by hand"):
        keras_spkd.suggest_layer_pairs(_op_residual_net(tapped_relu=False), model)
    with pytest.raises(TypeError, match="keras.Model"):
        keras_spkd.suggest_layer_pairs("resnet50", model)
