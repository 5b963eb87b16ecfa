"""Reward names -> ``"module:Class"`` entry points, resolved lazily (core layer).

Like Gymnasium's env registry, a name is registered with the import path of what builds
it, and the module is imported only when the reward is made::

    register_reward("direct", "rewards.direct:DirectReward")
    make_reward("direct", judge="qwen2.5-coder-1.5b-instruct")   # imports rewards.direct now

So the core (``rlaif_gym``: envs, data, tasks) names the rewards of the ``rewards``
package without importing it, and imports keep pointing one way.

:func:`make_reward` accepts:
    * ``None`` or ``"none"``: always 0.
    * a registered name (:data:`REWARD_REGISTRY`), built with ``**options``.
    * a :class:`~rlaif_gym.reward_protocol.RewardFunction` instance: used as is.
    * any callable ``(prompts, completions) -> Sequence[float]``.
    * a trained reward-model directory (``reward="runs/rm-ai"``).

Every spec also takes ``normalize=``: ``True`` or a dict such as
``{"whiten": True, "clip": [-5, 5]}`` wraps the reward in
:class:`rewards.wrappers.NormalizedReward` (running whitening, clipping).

``context=`` carries defaults from the caller, for example the env's ``task`` or a training
run's ``judge`` and ``num_threads``: each is passed to a named reward whose constructor has a
parameter of that name (or takes ``**kwargs``), unless the user gave it. This is the one
place where "the d-RLAIF reward judges with the env's task" is decided.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gymnasium.envs.registration import load_env_creator

from rlaif_gym.reward_protocol import CallableReward, RewardFunction

__all__ = [
    "NORMALIZE_ENTRY_POINT",
    "REWARD_REGISTRY",
    "RM_DIRECTORY_ENTRY_POINT",
    "RewardSpec",
    "accepts_option",
    "check_reward_options",
    "make_reward",
    "register_reward",
    "reward_names",
    "reward_spec",
]

#: Builds the ``normalize=`` wrapper: ``normalize_reward(reward, normalize) -> RewardFunction``.
NORMALIZE_ENTRY_POINT = "rewards.wrappers:normalize_reward"
#: Builds a reward from a trained reward-model directory given as the spec itself.
RM_DIRECTORY_ENTRY_POINT = "rewards.reward_model:RewardModelReward"


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward.

    Attributes:
        name: what users pass as ``reward=``.
        entry_point: ``"module:Attr"`` (imported on first use) or the callable itself;
            called with the options, it returns a :class:`RewardFunction`.
        kwargs: fixed keyword arguments added before the user's options.
        requires: option names that must be given (e.g. ``("path",)`` for a trained RM).
        description: one line for ``--help`` texts and error messages.
    """

    name: str
    entry_point: str | Callable[..., RewardFunction]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    description: str = ""

    def load(self) -> Callable[..., RewardFunction]:
        """The constructor behind :attr:`entry_point` (imports its module)."""
        if callable(self.entry_point):
            return self.entry_point
        return load_env_creator(self.entry_point)  # type: ignore[return-value]


#: name -> :class:`RewardSpec`. Add to it with :func:`register_reward`.
REWARD_REGISTRY: dict[str, RewardSpec] = {}


def register_reward(name: str, entry_point: str | Callable[..., RewardFunction], *,
                    kwargs: Mapping[str, Any] | None = None, requires: tuple[str, ...] = (),
                    description: str = "", override: bool = False) -> RewardSpec:
    """Register ``name`` so that ``make_reward(name, **options)`` and
    ``gym.make(..., reward=name)`` build it.

    Raises:
        ValueError: ``name`` is registered already (pass ``override=True`` to replace it), or
            ``entry_point`` is a string without ``":"``.
    """
    if name in REWARD_REGISTRY and not override:
        raise ValueError(f"reward {name!r} is registered already (override=True replaces it)")
    if isinstance(entry_point, str) and ":" not in entry_point:
        raise ValueError(f"entry_point must be 'module:Attr', got {entry_point!r}")
    spec = RewardSpec(name, entry_point, dict(kwargs or {}), tuple(requires), description)
    REWARD_REGISTRY[name] = spec
    return spec


def reward_names(*, with_requirements: bool = True) -> list[str]:
    """The registered names, sorted (``with_requirements=False`` leaves out those that need
    options such as ``path=``)."""
    return sorted(n for n, s in REWARD_REGISTRY.items() if with_requirements or not s.requires)


def _unknown(name: str) -> ValueError:
    simple = ", ".join(reward_names(with_requirements=False))
    needing = ", ".join(f"{n} (with {', '.join(s.requires)}=...)"
                        for n, s in sorted(REWARD_REGISTRY.items()) if s.requires)
    return ValueError(f"unknown reward {name!r}; valid names: {simple}; {needing}; or a trained "
                      "reward-model directory; or pass a callable (prompts, completions) -> scores")


def reward_spec(name: str) -> RewardSpec:
    """The :class:`RewardSpec` registered as ``name``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    try:
        return REWARD_REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None


def _is_rm_directory(spec: str) -> bool:
    return spec not in REWARD_REGISTRY and os.path.isdir(os.path.expanduser(spec))


def _resolve(spec: str, options: Mapping[str, Any]) -> tuple[Callable[..., RewardFunction],
                                                            dict[str, Any], RewardSpec | None]:
    """The constructor of a named or directory spec and its full keyword arguments."""
    if _is_rm_directory(spec):
        return load_env_creator(RM_DIRECTORY_ENTRY_POINT), {"path": spec, "name": f"rm:{spec}",
                                                            **options}, None
    registered = reward_spec(spec)
    return registered.load(), {**registered.kwargs, **options}, registered


def _named_parameters(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword names ``factory`` accepts by name, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: accept anything
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _with_context(factory: Callable[..., Any], kwargs: dict[str, Any],
                  context: Mapping[str, Any] | None) -> dict[str, Any]:
    """``kwargs`` plus each context value the factory takes (by name or through
    ``**kwargs``) and that ``kwargs`` does not set."""
    names, takes_any = _named_parameters(factory)
    for key, value in (context or {}).items():
        if (key in names or takes_any) and value is not None:
            kwargs.setdefault(key, value)
    return kwargs


def accepts_option(spec: object, name: str) -> bool:
    """Whether the named (or directory) reward ``spec`` takes the option ``name``; False for
    instances, callables and ``None``. Imports the reward's module, loads no model."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        return False
    factory, _, _ = _resolve(spec, {})
    names, takes_any = _named_parameters(factory)
    return name in names or takes_any


def check_reward_options(spec: object, options: Mapping[str, Any] | None = None, *,
                         context: Mapping[str, Any] | None = None) -> None:
    """Check, without building it, that ``make_reward(spec, context=context, **options)``
    gets options its reward accepts: a named reward's module is imported (no model is
    loaded) and the options are matched against its constructor's signature.

    Raises:
        ValueError: an unknown name, or a required option missing.
        TypeError: an option the reward does not take, or options with an instance or a
            callable.
    """
    options = dict(options or {})
    options.pop("normalize", None)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if spec is None or isinstance(spec, RewardFunction) or (callable(spec)
                                                            and not isinstance(spec, str)):
        if options and spec is not None:
            raise TypeError(f"reward options {sorted(options)} given with a reward "
                            f"{'instance' if isinstance(spec, RewardFunction) else 'callable'}")
        return
    if not isinstance(spec, str):
        raise TypeError(f"reward must be a name, a RewardFunction or a callable, "
                        f"got {type(spec).__name__}")
    factory, kwargs, registered = _resolve(spec, options)
    names, takes_any = _named_parameters(factory)
    unknown = sorted(set(kwargs) - names) if not takes_any else []
    if unknown:
        raise TypeError(f"reward {spec!r} does not take the option(s) {unknown}; it takes "
                        f"{sorted(names - {'self'})}")
    kwargs = _with_context(factory, kwargs, context)
    if registered is not None:
        missing = [k for k in registered.requires if kwargs.get(k) is None]
        if missing:
            raise ValueError(f"reward {spec!r} needs {', '.join(f'{k}=...' for k in missing)}"
                             + (f" ({registered.description})" if registered.description
                                else ""))


def make_reward(spec: object = None, *, context: Mapping[str, Any] | None = None,
                **options: Any) -> RewardFunction:
    """Build a reward function from a name, an instance, a callable or an RM directory.

    Args:
        spec: see the module docstring.
        context: caller defaults (``task``, ``judge``, ``num_threads``...) passed to a named
            reward that takes a parameter of that name (or ``**kwargs``) and was not given
            it in ``options``.
        options: the reward's keyword options, plus ``normalize=`` for any spec.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        TypeError: options given with an instance or callable, or a spec of another type.
    """
    normalize = options.pop("normalize", None)
    if normalize is not None and normalize is not False:
        wrap = load_env_creator(NORMALIZE_ENTRY_POINT)
        return wrap(make_reward(spec, context=context, **options), normalize)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if spec is None:
        spec = "none"
    if isinstance(spec, RewardFunction):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a reward instance")
        return spec
    if isinstance(spec, str):
        factory, kwargs, _ = _resolve(spec, options)
        return factory(**_with_context(factory, kwargs, context))
    if callable(spec):
        if options:
            raise TypeError(f"reward options {sorted(options)} given with a callable reward")
        return CallableReward(spec)
    raise TypeError(
        f"reward must be a name, a RewardFunction or a callable, got {type(spec).__name__}"
    )


register_reward("none", "rlaif_gym.reward_protocol:ZeroReward",
                description="always 0 (smoke tests: only the KL term acts)")
register_reward("direct", "rewards.direct:DirectReward",
                description="d-RLAIF: the judge rates each completion 1-10, reward in [-1, 1]")
register_reward("pairwise", "rewards.pairwise:PairwiseReward",
                description="the judge compares a prompt's samples in pairs, both orders "
                            "(anchor='reference': each sample vs the reference), score in "
                            "[-1, 1]")
register_reward("ai-rm", "rewards.reward_model:RewardModelReward",
                kwargs={"name": "ai-rm", "expected_source": "ai"}, requires=("path",),
                description="a reward model trained on AI labels (path=RM_DIR)")
register_reward("human-rm", "rewards.reward_model:RewardModelReward",
                kwargs={"name": "human-rm", "expected_source": "human"}, requires=("path",),
                description="a reward model trained on human labels (path=RM_DIR)")
