"""The command line's mistakes in one line. Before Hydra composes a command's config, it is
composed once here (for a sweep, with each swept key at its first value), so that an unknown
option of a config group, a misspelt key or a value of the wrong type is refused in one line that
names the key and what to give; Hydra's own messages run to 5-15 lines.

Commands with Hydra's flags (--help, --cfg, --config-dir, ...) are left to Hydra.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

MULTIRUN = ("-m", "--multirun")


def one_config(overrides: list[str]) -> list[str]:
    """The overrides of one job of the command: each swept key at its first value; a searched
    interval() is left to the search."""
    out = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            out.append(str(o.input_line))
        elif o.is_discrete_sweep():
            out.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
    return out


def problem(argv: list[str], config_dir: Path, config_name: str = "config") -> str | None:
    """What is wrong with the command line `argv`, in one line; None when it composes, or when
    Hydra is better placed to say (its flags, a syntax error)."""
    if any(a.startswith("-") and a not in MULTIRUN for a in argv):
        return None
    try:
        overrides = one_config([a for a in argv if a not in MULTIRUN])
    except OverrideParseException:
        return None  # Hydra names the character it stopped at
    try:
        with initialize_config_dir(config_dir=str(config_dir)):
            compose(config_name, overrides=overrides)
    except MissingConfigException as err:
        group, _, option = (err.missing_cfg_file or "").rpartition("/")
        if not group or not err.options:
            return None
        return f"{group}={option} is not an option of {group}: use one of {', '.join(err.options)}"
    except ConfigCompositionException as err:
        return _key_problem(err.__cause__)
    return None


def _key_problem(cause: BaseException | None) -> str | None:
    key = cause.full_key if isinstance(cause, OmegaConfBaseException) else None
    if not key:
        return None
    first = str(cause).strip().splitlines()[0]
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        guess = re.search(r"Did you mean: '(\w+)'", first)
        hint = f"did you mean {key.rpartition('.')[0] + '.' if '.' in key else ''}{guess[1]}? " if guess else ""
        return f"{key} is not a key of this config: {hint}(python run.py --cfg job lists the keys)"
    if isinstance(cause, ValidationError):
        return f"{key}: {first.rstrip('.')}"
    return None
