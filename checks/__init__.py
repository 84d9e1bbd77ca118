"""Checking a job spec before it is queued, without TensorFlow: Keras' allowlist,
user model configs, built-in datasets and architectures, errors and advice."""
