"""The Keras objects a job spec may name: optimizers, losses, metrics, layers.

Everything here is an allowlist of Keras' own classes and identifiers. The worker
resolves these names with Keras; the API only checks them, without importing Keras.
"""

from __future__ import annotations

from typing import Literal

from models.spec import ObjectSpec

OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "adamax": "Adamax",
    "nadam": "Nadam",
    "ftrl": "Ftrl",
    "lion": "Lion",
}
# What each argument of an optimizer, loss or metric config holds: "number" (an int or
# a float), "int", "bool", "name" (a string that names no Keras object), or
# "numbers" (a number or a list of numbers); "?" allows null. An optimizer's
# "learning_rate" is a number or a schedule (``LR_SCHEDULES``, below).
OPTIMIZER_CONFIG_KEYS = {
    "learning_rate": "learning_rate",
    "beta_1": "number",
    "beta_2": "number",
    "epsilon": "number",
    "amsgrad": "bool",
    "weight_decay": "number?",
    "momentum": "number",
    "nesterov": "bool",
    "rho": "number",
    "centered": "bool",
    "clipnorm": "number?",
    "clipvalue": "number?",
    "global_clipnorm": "number?",
    "initial_accumulator_value": "number",
    "learning_rate_power": "number",
    "l1_regularization_strength": "number",
    "l2_regularization_strength": "number",
    "use_ema": "bool",
    "ema_momentum": "number",
    "name": "name",
}

# Learning-rate schedules (``keras.optimizers.schedules``): an optimizer's
# ``learning_rate`` may be one, and so may LearningRateScheduler's ``schedule``. Each
# argument of Keras' own signature, with what it holds: "rate" (a finite number, read
# as a float), "steps" (a number > 0, as Keras requires of its decay steps), "positive"
# (a number > 0: CosineDecayRestarts takes the logarithm of its ``t_mul``), "count"
# (an integer >= 0), "bool", "scope" (a name TensorFlow takes for a name scope),
# "boundaries" (strictly increasing integers >= 0), "rates" (a list of rates); "?"
# allows null. Required arguments are those Keras' signature has no default for.
LR_SCHEDULE_MODULE = "keras.optimizers.schedules"
LR_SCHEDULES: dict[str, dict[str, str]] = {
    "ExponentialDecay": {
        "initial_learning_rate": "rate",
        "decay_steps": "steps",
        "decay_rate": "rate",
        "staircase": "bool",
        "name": "scope",
    },
    "PiecewiseConstantDecay": {"boundaries": "boundaries", "values": "rates", "name": "scope"},
    "PolynomialDecay": {
        "initial_learning_rate": "rate",
        "decay_steps": "steps",
        "end_learning_rate": "rate",
        "power": "rate",
        "cycle": "bool",
        "name": "scope",
    },
    "InverseTimeDecay": {
        "initial_learning_rate": "rate",
        "decay_steps": "steps",
        "decay_rate": "rate",
        "staircase": "bool",
        "name": "scope",
    },
    "CosineDecay": {
        "initial_learning_rate": "rate",
        "decay_steps": "steps",
        "alpha": "rate",
        "name": "scope",
        "warmup_target": "rate?",
        "warmup_steps": "count",
    },
    "CosineDecayRestarts": {
        "initial_learning_rate": "rate",
        "first_decay_steps": "steps",
        "t_mul": "positive",
        "m_mul": "rate",
        "alpha": "rate",
        "name": "scope",
    },
}
LR_SCHEDULE_REQUIRED: dict[str, tuple[str, ...]] = {
    "ExponentialDecay": ("initial_learning_rate", "decay_steps", "decay_rate"),
    "PiecewiseConstantDecay": ("boundaries", "values"),
    "PolynomialDecay": ("initial_learning_rate", "decay_steps"),
    "InverseTimeDecay": ("initial_learning_rate", "decay_steps", "decay_rate"),
    "CosineDecay": ("initial_learning_rate", "decay_steps"),
    "CosineDecayRestarts": ("initial_learning_rate", "first_decay_steps"),
}
# The arguments of each schedule that hold rates: JSON's ``1`` is Keras' ``1.0``.
LR_SCHEDULE_RATES = {
    name: {key for key, kind in keys.items() if kind.rstrip("?") in ("rate", "rates")}
    for name, keys in LR_SCHEDULES.items()
}

LOSSES = {
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "binary_crossentropy": "BinaryCrossentropy",
    "mean_squared_error": "MeanSquaredError",
    "mse": "MeanSquaredError",
    "mean_absolute_error": "MeanAbsoluteError",
    "mae": "MeanAbsoluteError",
    "huber": "Huber",
    "log_cosh": "LogCosh",
    "hinge": "Hinge",
}
LOSS_CONFIG_KEYS = {
    "from_logits": "bool",
    "label_smoothing": "number",
    "delta": "number",
    "axis": "int",
    "name": "name",
    "ignore_class": "int?",
}
# Losses whose labels are class indices (the rest take one-hot or real targets).
SPARSE_LOSSES = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
BINARY_LOSSES = {"binary_crossentropy", "BinaryCrossentropy", "hinge", "Hinge"}
ONE_HOT_LOSSES = {"categorical_crossentropy", "CategoricalCrossentropy"}


def labels_are_classes(loss: str) -> bool:
    """Whether ``loss`` reads 1-D integer labels as classes (class indices, or 0/1).

    With any other loss (a regression: mse, mae, huber, ...) integer targets are
    numbers: they size no output layer, and class weights do not apply to them.
    """
    return loss in SPARSE_LOSSES or loss in BINARY_LOSSES


def output_head(loss: str, n_classes: int | None, target_dim: int) -> tuple[int, str]:
    """Units and activation of a built-in model's output layer, from the loss.

    Class indices with a sparse loss get one softmax unit per class; a binary loss
    one sigmoid unit; one-hot targets a softmax per column; anything else (a
    regression) one linear unit per target.
    """
    if loss in SPARSE_LOSSES and n_classes is not None:
        return n_classes, "softmax"
    if loss in BINARY_LOSSES:
        return target_dim, "sigmoid"
    if loss in ONE_HOT_LOSSES:
        return target_dim, "softmax"
    return target_dim, "linear"


# Metric identifiers accepted as strings; Keras logs each under the string given.
METRIC_NAMES = {
    "accuracy",
    "acc",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
    "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy",
    "mean_squared_error",
    "mse",
    "mean_absolute_error",
    "mae",
    "auc",
    "precision",
    "recall",
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
}
# Metric classes accepted as {class_name, config}, with the name Keras logs by default.
METRIC_CLASSES = {
    "Accuracy": "accuracy",
    "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
    "CategoricalAccuracy": "categorical_accuracy",
    "BinaryAccuracy": "binary_accuracy",
    "SparseTopKCategoricalAccuracy": "sparse_top_k_categorical_accuracy",
    "TopKCategoricalAccuracy": "top_k_categorical_accuracy",
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "AUC": "auc",
    "Precision": "precision",
    "Recall": "recall",
}
METRIC_CONFIG_KEYS = {
    "name": "name",
    "k": "int",
    "threshold": "numbers?",
    "thresholds": "numbers?",
    "num_thresholds": "int",
    "from_logits": "bool",
}

ACTIVATIONS = {
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
    "linear",
    "elu",
    "selu",
    "gelu",
    "swish",
    "silu",
    "softplus",
    "softsign",
    "leaky_relu",
    "relu6",
    "mish",
    "exponential",
    "hard_sigmoid",
    "log_softmax",
}

# Layers a keras_config may use (module ``keras.layers``).
LAYERS = {
    "InputLayer",
    "Dense",
    "Dropout",
    "Flatten",
    "Reshape",
    "Activation",
    "BatchNormalization",
    "LayerNormalization",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "SeparableConv2D",
    "DepthwiseConv2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "ZeroPadding2D",
    "Cropping2D",
    "UpSampling2D",
    "Add",
    "Concatenate",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Subtract",
    "Dot",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "PReLU",
    "Softmax",
    "GaussianNoise",
    "GaussianDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "ActivityRegularization",
    "RepeatVector",
    "Permute",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Bidirectional",
    "TimeDistributed",
    "Embedding",
    "Rescaling",
    "Normalization",
    "UnitNormalization",
}
INITIALIZERS = {
    "GlorotUniform",
    "GlorotNormal",
    "HeUniform",
    "HeNormal",
    "LecunUniform",
    "LecunNormal",
    "Zeros",
    "Ones",
    "Constant",
    "RandomUniform",
    "RandomNormal",
    "TruncatedNormal",
    "Orthogonal",
    "Identity",
    "VarianceScaling",
}
REGULARIZERS = {"L1", "L2", "L1L2", "OrthogonalRegularizer"}
CONSTRAINTS = {"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"}
# The strings Keras' ``initializers.get``, ``regularizers.get`` and ``constraints.get``
# resolve to the classes above: each class name, and its snake_case aliases (not
# Constant, which needs its value: {class_name: Constant, config: {value: ...}}).
INITIALIZER_NAMES = (INITIALIZERS - {"Constant"}) | {
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "zeros",
    "zero",
    "ones",
    "one",
    "random_uniform",
    "uniform",
    "random_normal",
    "normal",
    "truncated_normal",
    "orthogonal",
    "identity",
    "variance_scaling",
}
REGULARIZER_NAMES = REGULARIZERS | {"l1", "l2", "l1l2", "orthogonal_regularizer"}
CONSTRAINT_NAMES = CONSTRAINTS | {"max_norm", "min_max_norm", "non_neg", "unit_norm"}
# Data types and dtype policies a layer may name (``dtype``); no quantized policies
# (Keras reads "int8" as one).
DTYPES = {
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "mixed_float16",
    "mixed_bfloat16",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}
MODEL_CLASSES = {"Sequential": {"keras"}, "Functional": {"keras.src.models.functional", "keras"}}

# The way each allowlisted metric improves, as its Keras metric object says
# (``Metric._direction``: "up" is max, "down" is min), by string identifier and by
# class name. tests/worker/test_monitor_rule.py checks every entry against Keras.
METRIC_DIRECTIONS: dict[str, Literal["min", "max"]] = {
    "accuracy": "max",
    "acc": "max",
    "sparse_categorical_accuracy": "max",
    "categorical_accuracy": "max",
    "binary_accuracy": "max",
    "sparse_top_k_categorical_accuracy": "max",
    "top_k_categorical_accuracy": "max",
    "mean_squared_error": "min",
    "mse": "min",
    "mean_absolute_error": "min",
    "mae": "min",
    "auc": "max",
    "precision": "max",
    "recall": "max",
    "sparse_categorical_crossentropy": "min",
    "categorical_crossentropy": "min",
    "binary_crossentropy": "min",
    "Accuracy": "max",
    "SparseCategoricalAccuracy": "max",
    "CategoricalAccuracy": "max",
    "BinaryAccuracy": "max",
    "SparseTopKCategoricalAccuracy": "max",
    "TopKCategoricalAccuracy": "max",
    "MeanSquaredError": "min",
    "MeanAbsoluteError": "min",
    "AUC": "max",
    "Precision": "max",
    "Recall": "max",
}


def logged_name(metric: str | ObjectSpec) -> str | None:
    """The key a compiled metric logs under: its identifier, or its config's ``name``,
    or its class's default name; None for a class the allowlist does not hold."""
    if isinstance(metric, str):
        return metric
    name = metric.config.get("name") or METRIC_CLASSES.get(metric.class_name)
    return name if isinstance(name, str) else None
