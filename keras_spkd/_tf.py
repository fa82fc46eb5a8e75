"""TensorFlow, for the parts of keras-spkd that need it, with a clear error where it is missing.

The core (`losses`, `features`, `terms`, `distiller`, `pairs`) runs on any
Keras backend without TensorFlow; `tf.data` pipelines, TFDS, the exports,
`tf.distribute` and the workflow import TensorFlow through here.
"""

try:
    import tensorflow as tf
except ImportError as error:  # pragma: no cover - exercised in the JAX/PyTorch CI lanes
    raise ImportError(
        "This part of keras-spkd (data pipelines, TFDS, exports, tf.distribute, the workflow "
        "and the CLI) needs TensorFlow: pip install 'tensorflow>=2.21,<2.22' (a default "
        "dependency of keras-spkd). The core (SPDistiller, the terms and losses, layer taps "
        f"and pairs) runs without it on JAX and PyTorch. ({error})"
    ) from error

__all__ = ["tf"]
