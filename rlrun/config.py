"""Typed configuration: one dataclass per config group, each field typed and documented once.

Hydra composes YAML from ``rlrun/conf``; :func:`load` merges each group onto its dataclass
(types checked by OmegaConf), builds the dataclasses (ranges checked in ``__post_init__``)
and turns every problem into a :class:`ConfigError` whose message names the key, the bad
value and what would be accepted. Nothing is derived back into the config: derived values
(batch size, number of iterations) are properties.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlrun.algos import ALGOS
from rlrun.checks import ConfigError, check, choice, unit

# --------------------------------------------------------------------------- env
ENV_BACKENDS = ("auto", "torch", "gymnasium", "ale")


@dataclass
class EnvConfig:
    """Which environment, through which backend, how many copies."""

    name: str = "CartPole"
    """Short name used in run-folder names and plots."""
    id: str = "CartPole-v1"
    """Gymnasium id (``ALE/Pong-v5`` style ids go to the ale backend)."""
    backend: str = "auto"
    """auto | torch | gymnasium | ale. auto: torch where a tensor-native env exists (CartPole, Acrobot, MountainCar,
    MountainCarContinuous, Pendulum) and no ``kwargs`` are given, ale for ALE ids, else gymnasium."""
    num_envs: int = 8
    """Environments stepped together for training."""
    vector_mode: str = "sync"
    """gymnasium backend only: sync (one process) or async (one worker process per env)."""
    max_episode_steps: int | None = None
    """Time limit in agent steps; None keeps the env's registered limit."""
    reward_threshold: float | None = None
    """Evaluation return that counts as solved; None takes the gymnasium spec's value."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for gymnasium.make (gymnasium backend; the tensor-native envs take none)."""
    opponent: str = "random"
    """Two-player games (TicTacToe, ConnectFour): who evaluation plays, the agent taking each colour in half the
    games: random, alphabeta:<depth>, mcts:<simulations> (random rollouts) or perfect (tic-tac-toe)."""
    opening_moves: int = 0
    """Two-player games: evaluation games start from this many uniformly random moves (0 to 4, none of which can
    end a game), so that two deterministic players do not replay the same game."""
    # Atari (ale backend) preprocessing, each a switch.
    frame_skip: int = 4
    """Agent step = this many emulator frames (max-pooled over the last two)."""
    frame_stack: int = 4
    """Observation = this many most recent 84x84 grey frames."""
    noop_max: int = 30
    """Up to this many no-op actions at reset (random starts)."""
    fire_reset: bool = True
    """Press FIRE at every game start and after every life loss, in games whose action set has FIRE."""
    episodic_life: bool = True
    """Training only: losing a life ends the episode for bootstrapping (not for statistics)."""
    clip_rewards: bool = True
    """Training only: reward -> sign(reward)."""
    repeat_action_probability: float = 0.0
    """Sticky actions (0.25 in Machado et al. 2018's protocol)."""
    max_episode_frames: int = 108000
    """Emulator frames before an Atari episode is truncated (30 minutes)."""
    num_threads: int = 0
    """ale backend worker threads (0: one per env, capped by the cores)."""

    def __post_init__(self) -> None:
        choice("env.backend", self.backend, ENV_BACKENDS)
        choice("env.vector_mode", self.vector_mode, ("sync", "async"))
        check(self.num_envs >= 1, "env.num_envs", self.num_envs, "an integer >= 1")
        if self.max_episode_steps is not None:
            check(self.max_episode_steps >= 1, "env.max_episode_steps", self.max_episode_steps, "an integer >= 1 or null")
        check(self.frame_skip >= 1, "env.frame_skip", self.frame_skip, "an integer >= 1")
        check(self.frame_stack >= 1, "env.frame_stack", self.frame_stack, "an integer >= 1")
        check(self.noop_max >= 0, "env.noop_max", self.noop_max, "an integer >= 0")
        unit("env.repeat_action_probability", self.repeat_action_probability)
        check(self.num_threads >= 0, "env.num_threads", self.num_threads, "an integer >= 0")
        check(0 <= self.opening_moves <= 4, "env.opening_moves", self.opening_moves, "an integer from 0 to 4")


# --------------------------------------------------------------------------- run
@dataclass
class EvalConfig:
    """Periodic evaluation on separate envs (no exploration noise unless asked, no reward clipping)."""

    every_steps: int = 10000
    """Evaluate every this many env steps (0: only at the end)."""
    episodes: int = 10
    """Episodes per evaluation (one per eval env)."""
    deterministic: bool = True
    """Take the mode of the policy instead of sampling."""
    stop_at_threshold: bool = False
    """End training at the first evaluation that reaches the env's reward threshold."""

    def __post_init__(self) -> None:
        check(self.every_steps >= 0, "eval.every_steps", self.every_steps, "an integer >= 0")
        check(self.episodes >= 1, "eval.episodes", self.episodes, "an integer >= 1")


@dataclass
class CheckpointConfig:
    """When to write checkpoints (always atomically, always one at the end)."""

    every_steps: int = 0
    """Save every this many env steps (0: by time only, at the end and on interruption)."""
    every_minutes: float = 10.0
    """Also save every this many minutes of wall time, so a kill -9 or a power cut loses at most that (0: off)."""
    keep: int = 2
    """Checkpoints to keep (the newest ones): an older one remains if the newest cannot be read."""
    replay: bool = False
    """Off-policy algorithms: include the replay buffer in checkpoints (large: ~7 GB for 1M Atari transitions)."""

    def __post_init__(self) -> None:
        check(self.every_steps >= 0, "checkpoint.every_steps", self.every_steps, "an integer >= 0")
        check(self.every_minutes >= 0, "checkpoint.every_minutes", self.every_minutes, "a number >= 0")
        check(self.keep >= 1, "checkpoint.keep", self.keep, "an integer >= 1")


WANDB_MODES = ("auto", "online", "offline")


@dataclass
class LoggerConfig:
    """Trackers beside TensorBoard, which always records the run (``tensorboard --logdir runs``)."""

    wandb: bool = False
    """Mirror the TensorBoard scalars, the config, the summary and ``rlrun eval --video`` mp4s to Weights & Biases
    (extra ``wandb``); its files go under ``<run_dir>/wandb/``."""
    wandb_project: str = "rlrun"
    """The W&B project."""
    wandb_entity: str | None = None
    """The W&B team or user (None: your default entity)."""
    wandb_group: str | None = None
    """The W&B group (None: the sweep folder for a run inside a sweep, else no group)."""
    wandb_mode: str = "auto"
    """auto (WANDB_MODE if set; else online with an API key and a reachable server, offline otherwise), online or
    offline (upload later with ``wandb sync``)."""

    def __post_init__(self) -> None:
        choice("logger.wandb_mode", self.wandb_mode, WANDB_MODES)


DEVICE_HELP = "auto, cpu, cuda or cuda:N"


@dataclass
class TrainConfig:
    """One training run: the algorithm, the env, the device and the run's own settings."""

    algo: Any
    """The algorithm's dataclass (see rlrun.algos); chosen by ``algo=<name>``."""
    env: EnvConfig = field(default_factory=EnvConfig)
    seed: int = 0
    """Seeds torch and numpy; the training and evaluation envs get seeds hashed from it."""
    total_steps: int = 200000
    """Environment steps to train for (summed over the envs of the batch)."""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda or cuda:N."""
    torch_threads: int = 1
    """CPU threads for torch; 1 is fastest for small MLPs (per-op overhead, not arithmetic)."""
    deterministic: bool = False
    """Deterministic kernels (torch.use_deterministic_algorithms, cuDNN): the same seed gives the same curve on CUDA
    too, at some speed. CPU runs are deterministic either way."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    progress: bool = True
    """Show a progress bar on the console."""
    run_dir: str | None = None
    """Run folder; the Hydra app sets it. None: runs/<env>__<algo>__s<seed>__<time>."""
    resume: str | None = None
    """A run folder to continue: loads its latest checkpoint and keeps writing to it."""

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        check(self.total_steps >= 1, "total_steps", self.total_steps, "an integer >= 1")
        check(self.torch_threads >= 1, "torch_threads", self.torch_threads, "an integer >= 1")
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        check(ok, "device", dev, DEVICE_HELP)


def _describe(err: OmegaConfBaseException, prefix: str) -> str:
    key = getattr(err, "full_key", None) or ""
    key = f"{prefix}.{key}" if prefix and key else (key or prefix)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"Bad config value for {key}: {msg}."


def _is_int(hint: Any) -> bool:
    """``int`` or ``int | None`` (not bool, not float)."""
    return hint is int or (typing.get_origin(hint) in (typing.Union, types.UnionType) and int in typing.get_args(hint))


def integral_floats(schema: type, node: Any) -> Any:
    """``node`` with each integral float (``1e4``, ``2.5e5``: Hydra reads them as floats) turned into an int where
    the dataclass ``schema`` types the key int; a non-integral value is left for the type check to refuse."""
    if not isinstance(node, dict) or not dataclasses.is_dataclass(schema):
        return node
    hints, out = typing.get_type_hints(schema), dict(node)
    for f in dataclasses.fields(schema):
        if f.name not in out:
            continue
        value, hint = out[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            out[f.name] = integral_floats(hint, value)
        elif _is_int(hint) and isinstance(value, float) and value.is_integer():
            out[f.name] = int(value)
    return out


def check_lists(schema: type, node: Any, prefix: str) -> None:
    """Refuse a scalar given to a list key (``algo.hidden_sizes=64``) in one sentence, with the list form."""
    if not isinstance(node, dict) or not dataclasses.is_dataclass(schema):
        return
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        key, value, hint = f"{prefix}.{f.name}" if prefix else f.name, node[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            check_lists(hint, value, key)
        elif typing.get_origin(hint) is list and not isinstance(value, (list, tuple)) and value is not None:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else []
            example = ",".join(str(v) for v in default) or "64,64"
            raise ConfigError(f"{key}={value!r} is not accepted: expected a list, e.g. {key}=[{example}] "
                              f"(in a shell, quote it: '{key}=[{example}]').")


def _build(schema: type, node: Any, prefix: str) -> Any:
    """Merge ``node`` onto the dataclass ``schema`` (type check), then construct it (range check)."""
    check_lists(schema, node, prefix)
    node = integral_floats(schema, node)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err, prefix)) from None


def load(cfg: DictConfig | dict) -> TrainConfig:
    """Check a composed config and return it typed; raises ConfigError before any work is done."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    raw = OmegaConf.to_container(cfg, resolve=True)
    algo_node = raw.pop("algo", None)
    if not isinstance(algo_node, dict) or algo_node.get("name") not in ALGOS:
        name = algo_node.get("name") if isinstance(algo_node, dict) else algo_node
        raise ConfigError(f"algo={name!r} is not an algorithm rlrun has: choose one of {', '.join(sorted(ALGOS))}.")
    algo = _build(ALGOS[algo_node["name"]].Config, algo_node, "algo")
    for key in list(raw):
        if key not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raw.pop(key)  # Hydra's own keys and user notes are not ours to check
    env_node = raw.pop("env", {})
    env = _build(EnvConfig, env_node, "env")
    rest = _build(TrainConfig, dict(raw, algo=None), "")
    return dataclasses.replace(rest, algo=algo, env=env)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain data (for summaries, hparams and checkpoints)."""
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become strings."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value) if isinstance(value, (list, tuple)) else value
    return out




def env_name(env_id: str) -> str:
    """A run's env name from a gymnasium id: ``Acrobot-v1`` -> ``Acrobot``, ``ALE/Pong-v5`` -> ``Pong``,
    ``PongNoFrameskip-v4`` -> ``PongNoFrameskip``, ``my_pkg:MyEnv-v0`` -> ``MyEnv``."""
    base = env_id.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return re.sub(r"-v\d+$", "", base) or env_id


RUN_NAME_KEYS = ("algo", "env", "seed", "run_dir", "resume", "progress", "device", "torch_threads", "eval",
                 "checkpoint", "logger", "deterministic")
"""Overrides a single run's folder name leaves out (the name has algo, env and seed already; the others, and
every ``eval.``, ``checkpoint.`` and ``logger.`` key, do not change what is learnt)."""


def run_suffix(overrides: Any) -> str:
    """The part of a single run's folder name that tells it from its neighbours: ``__`` and the overrides other
    than :data:`RUN_NAME_KEYS` (``algo.replay=false,algo.target_network=false`` -> ``__replay=false,
    target_network=false``), at most 80 characters; empty without such overrides."""
    kept = []
    for override in overrides or ():
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        group = key.split(".")[0]
        if key.startswith("hydra") or key in RUN_NAME_KEYS or group in ("eval", "checkpoint", "logger"):
            continue
        short = key.split(".", 1)[1] if key.startswith(("algo.", "env.")) else key
        kept.append(f"{short}={value}".replace("/", "-").replace(" ", ""))
    text = ",".join(kept)
    if len(text) > 80:  # whole overrides only
        text = text[:80].rsplit(",", 1)[0] if "," in text[:80] else text[:80]
    return f"__{text}" if text else ""


def register_schemas() -> None:
    """Put each config dataclass's defaults in Hydra's ConfigStore: ``schema/env`` and ``schema/algo/<name>``
    (and the ``env_name`` resolver that ``conf/env/gym.yaml`` names its runs with).

    Every ``conf/env/*.yaml`` starts from the first (``defaults: [/schema/env@_here_, _self_]``), every ``conf/algo/*.yaml``
    from its algorithm's (``defaults: [/schema/algo/<name>@_here_, _self_]``), so each file lists only what
    differs from the dataclass, yet every key can be overridden on the command line (Hydra refuses keys its
    composed config lacks). The nodes hold the defaults as plain data, not the dataclasses: types are checked
    by :func:`load` with the rest, so a bad value is refused in rlrun's words and, in a sweep, fails only its
    own job (a typed node would make Hydra stop the whole sweep while composing it).
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    if not OmegaConf.has_resolver("env_name"):
        OmegaConf.register_new_resolver("env_name", env_name)
    if not OmegaConf.has_resolver("run_suffix"):
        OmegaConf.register_new_resolver("run_suffix", run_suffix)
    store.store(group="schema", name="env", node=OmegaConf.create(dataclasses.asdict(EnvConfig())))
    store.store(group="schema", name="logger", node=OmegaConf.create(dataclasses.asdict(LoggerConfig())))
    for name, algo in ALGOS.items():
        store.store(group="schema/algo", name=name, node=OmegaConf.create(dataclasses.asdict(algo.Config(name=name))))
