"""Client and server optimizers by name (Reddi et al. 2021, "Adaptive Federated Optimization").

Server optimizer names and the algorithm they make with FedAvg's client SGD:
  sgd      FedAvg (server learning rate 1.0 is McMahan et al.'s plain average)
  sgdm     FedAvgM (server momentum, Hsu et al. 2019)
  adagrad  FedAdagrad
  adam     FedAdam
  yogi     FedYogi
All are `tff.learning.optimizers`, which keep their state in the server state
(so it is checkpointed with the model).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_federated as tff

SERVER_OPTIMIZERS = ("sgd", "sgdm", "adagrad", "adam", "yogi")
CLIENT_OPTIMIZERS = ("sgd", "sgdm", "adam")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str
  learning_rate: float
  momentum: float = 0.9       # sgdm
  epsilon: float = 1e-3       # adagrad / adam / yogi (Reddi et al.: tau)
  beta_1: float = 0.9
  beta_2: float = 0.99
  initial_accumulator: float = 0.1  # adagrad: TFF's default; Reddi et al.'s code starts at 0


def build_optimizer(config: OptimizerConfig, allowed: tuple[str, ...] = SERVER_OPTIMIZERS
                    ) -> tff.learning.optimizers.Optimizer:
  """A `tff.learning.optimizers.Optimizer` from its name and hyperparameters."""
  if config.name not in allowed:
    raise ValueError(f"unknown optimizer {config.name!r}; choose one of: {', '.join(allowed)}")
  if not config.learning_rate > 0:
    raise ValueError(f"learning rate must be positive, got {config.learning_rate}")
  lr = config.learning_rate
  if config.name == "sgd":
    return tff.learning.optimizers.build_sgdm(learning_rate=lr)
  if config.name == "sgdm":
    return tff.learning.optimizers.build_sgdm(learning_rate=lr, momentum=config.momentum)
  if config.name == "adagrad":
    return tff.learning.optimizers.build_adagrad(learning_rate=lr, epsilon=config.epsilon,
                                                 initial_preconditioner_value=config.initial_accumulator)
  if config.name == "adam":
    return tff.learning.optimizers.build_adam(learning_rate=lr, beta_1=config.beta_1,
                                              beta_2=config.beta_2, epsilon=config.epsilon)
  return tff.learning.optimizers.build_yogi(learning_rate=lr, beta_1=config.beta_1,
                                            beta_2=config.beta_2, epsilon=config.epsilon)


def build_keras_optimizer(config: OptimizerConfig) -> tf.keras.optimizers.Optimizer:
  """The Keras optimizer with the same update rule, for centralized baselines."""
  if not config.learning_rate > 0:
    raise ValueError(f"learning rate must be positive, got {config.learning_rate}")
  lr = config.learning_rate
  if config.name == "sgd":
    return tf.keras.optimizers.SGD(lr)
  if config.name == "sgdm":
    return tf.keras.optimizers.SGD(lr, momentum=config.momentum)
  if config.name == "adagrad":
    return tf.keras.optimizers.Adagrad(lr, epsilon=config.epsilon)
  if config.name == "adam":
    return tf.keras.optimizers.Adam(lr, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=config.epsilon)
  raise ValueError(f"no centralized optimizer named {config.name!r}; choose one of: sgd, sgdm, adagrad, adam")
