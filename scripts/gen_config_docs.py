"""Write docs/configuration.md from the config dataclasses: every key, its default and its docstring.

    python scripts/gen_config_docs.py          # rewrite the file
    python scripts/gen_config_docs.py --check  # exit 1 if the file is out of date (a test runs this)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
from pathlib import Path

import yaml

from rlrun.algos import ALGOS
from rlrun.config import CheckpointConfig, EnvConfig, EvalConfig, LoggerConfig, TrainConfig

OUT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
CONF = Path(__file__).resolve().parent.parent / "rlrun" / "conf"


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each annotated field, for ``cls`` and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def table(prefix: str, cls: type, skip: tuple[str, ...] = (), values: dict | None = None) -> str:
    """One row per field: its default (or ``values[name]``) and its docstring."""
    docs = field_docs(cls)
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        if values is not None and f.name in values:
            default = values[f.name]
        rows.append(f"| `{prefix}{f.name}` | `{default}` | {docs.get(f.name, '')} |")
    return "\n".join(rows)


def algo_values(name: str) -> dict:
    """What ``algo=<name>`` composes to without a preset: the dataclass defaults under its YAML file (and the
    files that YAML starts from, as rainbow.yaml starts from dqn.yaml)."""
    data = yaml.safe_load((CONF / "algo" / f"{name}.yaml").read_text())
    values: dict = {}
    for entry in data.get("defaults", []):
        if entry == "_self_":
            continue
        values = dataclasses.asdict(ALGOS[name].Config(name=name)) if entry.startswith("/schema/") else algo_values(entry)
    return {**values, **{k: v for k, v in data.items() if k != "defaults"}}


def render() -> str:
    parts = [
        "# Configuration reference",
        "",
        "Generated from the config dataclasses by `scripts/gen_config_docs.py`; do not edit by hand.",
        "Defaults here are what each choice composes to: the dataclass defaults, under `rlrun/conf/algo/<name>.yaml`",
        "where it sets other values (rainbow's six components). The presets in `rlrun/conf/preset/` (loaded by",
        "themselves for an algo/env pair) and `experiment=` files may set others again.",
        "`rlrun train --cfg job` prints what a command line composes to.",
        "",
        "## Run", "", table("", TrainConfig, skip=("algo", "env", "eval", "checkpoint", "logger")), "",
        "## Evaluation (`eval.`)", "", table("eval.", EvalConfig), "",
        "## Checkpoints (`checkpoint.`)", "", table("checkpoint.", CheckpointConfig), "",
        "## Trackers (`logger.`)", "", table("logger.", LoggerConfig), "",
        "## Environment (`env=<name>`, `env.`)", "", table("env.", EnvConfig), "",
    ]
    for name, algo in sorted(ALGOS.items()):
        parts += [f"## Algorithm `algo={name}`", "", table("algo.", algo.Config, values=algo_values(name)), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
