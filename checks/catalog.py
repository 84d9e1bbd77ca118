"""The Keras objects a job spec may name: optimizers, losses, metrics, layers.

Everything here is an allowlist of Keras' own classes and identifiers. The worker
resolves these names with Keras; the API only checks them, without importing Keras.
"""

from __future__ import annotations

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
OPTIMIZER_CONFIG_KEYS = {
    "learning_rate",
    "beta_1",
    "beta_2",
    "epsilon",
    "amsgrad",
    "weight_decay",
    "momentum",
    "nesterov",
    "rho",
    "centered",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "initial_accumulator_value",
    "learning_rate_power",
    "l1_regularization_strength",
    "l2_regularization_strength",
    "use_ema",
    "ema_momentum",
    "name",
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
LOSS_CONFIG_KEYS = {"from_logits", "label_smoothing", "delta", "axis", "name", "ignore_class"}
# Losses whose labels are class indices (the rest take one-hot or real targets).
SPARSE_LOSSES = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
BINARY_LOSSES = {"binary_crossentropy", "BinaryCrossentropy", "hinge", "Hinge"}
ONE_HOT_LOSSES = {"categorical_crossentropy", "CategoricalCrossentropy"}


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
METRIC_CONFIG_KEYS = {"name", "k", "threshold", "thresholds", "num_thresholds", "from_logits"}

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
MODEL_CLASSES = {"Sequential": {"keras"}, "Functional": {"keras.src.models.functional", "keras"}}

# Metrics whose larger values are better; everything else (losses, errors) is minimised.
_MAXIMISED = ("acc", "accuracy", "auc", "precision", "recall")


def monitor_direction(monitor: str, mode: str = "auto") -> str:
    """``min`` or ``max``: the direction in which ``monitor`` improves, as Keras infers it."""
    if mode in ("min", "max"):
        return mode
    name = monitor.removeprefix("val_")
    if name == "loss":
        return "min"
    return "max" if any(part in name for part in _MAXIMISED) else "min"
