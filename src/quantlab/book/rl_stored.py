"""The CartPole policies stored with the package: the recipe, its hash, saving and loading.

Training is exact only on one machine, so the chapter studies policies trained once (by
``scripts/train_policies.py``, following :data:`TRAINING_RECIPE`) and shipped as
``quantlab/data/cartpole_policies.safetensors`` (:data:`POLICIES_FILE`), with the recipe's
hash (:func:`recipe_hash`) to tell whether they still match it. :func:`load_policies` reads
them into a :class:`StoredPolicies`. Re-exported by :mod:`quantlab.book.rl`.

Taught in: chapters/05_rl.ipynb, "Train a policy".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    pass

from .rl_policy import ENV_ID, MAX_RETURN, Policy
from .rl_quantize import linear_layers

__all__ = ["TRAINING_RECIPE", "POLICIES_FILE", "recipe_hash", "StoredPolicies", "save_policies", "load_policies"]

# --------------------------------------------------------------------------- stored policies

TRAINING_RECIPE: dict[str, Any] = {
    "env_id": ENV_ID,
    "n_policies": 10,
    "max_seed": 40,
    "policy": {"obs_dim": 4, "n_actions": 2, "hidden": 64},
    "reinforce": {
        "max_episodes": 1000,
        "lr": 0.01,
        "gamma": 0.99,
        "target_return": MAX_RETURN,
        "eval_every": 10,
        "eval_episodes": 10,
    },
    "qat": {
        "formats": ["int2", "binary"],
        "granularities": ["tensor", "channel"],
        "steps": 100,
        "rounds": 2,
        "episodes": 10,
        "lr": 3e-3,
        "batch_size": 256,
    },
}
"""How the stored policies (:func:`load_policies`) were made: ``scripts/train_policies.py``
trains one :class:`Policy` per seed with :func:`train_reinforce`, seeds 0, 1, 2, ... in turn,
until ``n_policies`` of them have solved the task (a seed that has not solved it after
``max_episodes`` is recorded in the file's ``unsolved`` metadata and skipped), then fine-tunes
each kept policy with :func:`finetune_qat` for every QAT format and granularity listed here."""

POLICIES_FILE = "cartpole_policies.safetensors"
"""File name of the stored policies inside the package's ``data`` folder."""


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a training recipe's canonical JSON: stored beside the policies it made,
    so a test can tell when the stored file no longer matches :data:`TRAINING_RECIPE`."""
    if not isinstance(recipe, Mapping):
        raise TypeError(f"recipe must be a mapping, got {type(recipe).__name__}")
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


@dataclass
class StoredPolicies:
    """What :func:`load_policies` returns.

    Attributes:
        policies: name -> policy, e.g. ``"seed3/fp32"`` or ``"seed3/qat-int2-tensor"``.
        curves: name -> training returns per episode (float64), for the fp32 policies.
        metadata: the file's metadata (``recipe`` as JSON, ``recipe_hash``, ``unsolved``: the
            seeds skipped because training did not solve the task, as JSON; ``torch``, ...).
    """

    policies: dict[str, nn.Module]
    curves: dict[str, np.ndarray]
    metadata: dict[str, str]

    def seeds(self) -> list[int]:
        """The seeds of the stored float32 policies, ascending."""
        return sorted(int(k.split("/")[0][4:]) for k in self.policies if k.endswith("/fp32"))


def save_policies(
    path: Union[str, Path],
    policies: Mapping[str, nn.Module],
    *,
    curves: Optional[Mapping[str, Sequence[float]]] = None,
    metadata: Optional[Mapping[str, str]] = None,
) -> Path:
    """Write :class:`Policy` modules (and optional training curves) to one safetensors file.

    Args:
        path: the file to write.
        policies: name -> :class:`Policy` (names without ``"."``, e.g. ``"seed3/fp32"``).
        curves: name -> returns per training episode.
        metadata: string -> string, stored in the file's header.

    Returns:
        The path written.

    Raises:
        TypeError: a policy that is not a :class:`Policy`, metadata that is not str -> str.
        ValueError: a name containing ``"."``.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, policy in policies.items():
        if not isinstance(policy, Policy):
            raise TypeError(f"policies[{name!r}] must be a Policy, got {type(policy).__name__}")
        if "." in name:
            raise ValueError(f"policy names must not contain '.', got {name!r}")
        linears = linear_layers(policy)
        shapes[name] = [linears[0].in_features, linears[-1].out_features, linears[0].out_features]
        for key, value in policy.state_dict().items():
            tensors[f"policy.{name}.{key}"] = value.detach().to(torch.float32).contiguous().clone()
    for name, curve in (curves or {}).items():
        tensors[f"curve.{name}"] = torch.as_tensor(np.asarray(curve, dtype=np.float64))
    meta = {"shapes": json.dumps(shapes)}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        meta[k] = v
    path = Path(path)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_policies(path: Optional[Union[str, Path]] = None) -> StoredPolicies:
    """Read policies written by :func:`save_policies` (default: the ones stored with quantlab).

    The stored file holds ten CartPole policies trained with :func:`train_reinforce`
    (``"seed{s}/fp32"``, the first ten seeds whose training solved the task), their QAT fine-tunes
    (``"seed{s}/qat-{fmt}-{granularity}"``)
    and training curves, made by ``scripts/train_policies.py`` with :data:`TRAINING_RECIPE`.
    Evaluating them is exact on every CPU (see the module docstring), training them again is not.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that was not written by :func:`save_policies`.

    Taught in: chapters/05_rl.ipynb, "Train a policy".
    """
    from safetensors import safe_open

    if path is None:
        path = Path(__file__).resolve().parents[1] / "data" / POLICIES_FILE
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no stored policies at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        if "shapes" not in meta:
            raise ValueError(f"{path} was not written by quantlab.rl.save_policies (no 'shapes' metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file, not a dict)
    policies: dict[str, nn.Module] = {}
    for name, (obs_dim, n_actions, hidden) in json.loads(meta["shapes"]).items():
        policy = Policy(obs_dim=obs_dim, n_actions=n_actions, hidden=hidden)
        prefix = f"policy.{name}."
        policy.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        policies[name] = policy
    curves = {k[len("curve.") :]: v.numpy() for k, v in tensors.items() if k.startswith("curve.")}
    return StoredPolicies(policies=policies, curves=curves, metadata=meta)
