"""The pool process's TensorFlow devices, and the distribution strategy of a job.

``configure`` runs when a pool process starts, before TensorFlow initialises its
devices: GPU memory grows as needed instead of being taken whole, and a worker
without GPUs can split its CPU into logical devices (``FITQ_LOGICAL_CPUS``). Each
pool process trains one job and exits, so the CUDA context, and with it every byte
of GPU memory the job held, goes back to the device before the next job starts.
"""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger("fitq.worker")


class NotEnoughDevices(RuntimeError):
    """The job asks for more devices than this worker has."""


def configure(logical_cpus: int = 1) -> None:
    """Memory growth on every GPU; without GPUs, ``logical_cpus`` logical CPU devices."""
    gpus = tf.config.list_physical_devices("GPU")
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        if not gpus and logical_cpus > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical_cpus)]
            )
    except RuntimeError as exc:  # TensorFlow had initialised its devices already
        log.warning("could not configure devices: %s", exc)


def device_names() -> list[str]:
    """The devices a job can use here: the logical GPUs, else the logical CPUs."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def strategy_for(devices: int) -> tf.distribute.Strategy | None:
    """MirroredStrategy over the first ``devices`` devices; None for one device.

    Raises:
        NotEnoughDevices: This worker has fewer devices than asked.
    """
    if devices <= 1:
        return None
    names = device_names()
    if len(names) < devices:
        raise NotEnoughDevices(
            f"the job asks for resources.gpus={devices}, but this worker has "
            f"{len(names)} device(s): {names}"
        )
    return tf.distribute.MirroredStrategy(devices=names[:devices])
