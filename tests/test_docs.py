"""The documentation cannot drift: every command it shows composes or parses, and its generated
parts (the key reference, the glossary, the help page) equal what the code says."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import CONF
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import RangeSweep
from omegaconf import OmegaConf

from analysis import glossary
from analysis.__main__ import parser as analysis_parser
from neuralforge import reference
from neuralforge.config import Config, validate

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
README_MAX_LINES = 200


def shell_lines(path: Path):
    """(line number, words) of each command in the file's fenced code blocks: continuation lines
    joined, `&&` chains split, comments and leading VAR=value assignments dropped."""
    fenced, pending, start = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = pending + line, ""
        try:
            parts = [shlex.split(part, comments=True) for part in text.split("&&")]
        except ValueError:  # not shell (a Python block, output)
            continue
        for words in parts:
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]
            if words:
                yield start, words


def commands(prefix: list[str]):
    found = []
    for path in DOCS:
        if path.exists():
            found += [(f"{path.relative_to(ROOT)}:{n}", words[len(prefix):])
                      for n, words in shell_lines(path) if words[:len(prefix)] == prefix]
    return found


RUN_COMMANDS = commands(["python", "run.py"])
ANALYSIS_COMMANDS = commands(["python", "-m", "analysis"])


def job_overrides(args: list[str]) -> tuple[list[list[str]], list[str]]:
    """The override lists to compose for one command line: the base, then one per swept value
    (each swept key through each of its values, the other keys at their first value)."""
    words, flags = [], []
    skip_next = False
    for i, word in enumerate(args):
        if skip_next:
            skip_next = False
        elif word in ("--cfg", "-c", "--config-dir", "-cd", "--package", "-p"):
            flags += [word, args[i + 1]]
            skip_next = True
        elif word.startswith("-"):
            flags.append(word)
        else:
            words.append(word)
    if "-m" not in flags and "--multirun" not in flags:
        return [words], flags
    with initialize_config_dir(config_dir=CONF):
        base = compose("config", overrides=_first_values(words), return_hydra_config=True)
    preset = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*preset, *words])
    keys = [o.get_key_element() for o in parsed]
    # the command line's value of a key replaces the preset's, as Hydra's sweepers do
    last = {key: o for key, o in zip(keys, parsed)}
    fixed = [o.input_line if not o.is_sweep_override() else _first(o) for o in last.values()]
    jobs = [fixed]
    for key, o in last.items():
        if o.is_sweep_override() and o.is_discrete_sweep():
            values = list(o.sweep_string_iterator())
            if isinstance(o.value(), RangeSweep):  # range(256): its ends stand for the values between
                values = values[:1] + values[-1:]
            for value in values:
                jobs.append([f for f in fixed if not f.startswith(f"{key}=")] + [f"{key}={value}"])
    return jobs, flags


def _first(o) -> str:
    if o.is_discrete_sweep():
        return f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
    return f"{o.get_key_element()}={o.input_line.split('=', 1)[1]}"  # interval(): searched, left as written


def _first_values(words: list[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(words)
    return [_first(o) if o.is_sweep_override() else o.input_line for o in parsed]


@pytest.mark.parametrize("where, args", RUN_COMMANDS, ids=[w for w, _ in RUN_COMMANDS])
def test_every_run_command_in_the_docs_composes_and_passes_the_harness_checks(where, args, tmp_path):
    if "--config-dir" in args or "-cd" in args:
        folder = args[args.index("--config-dir" if "--config-dir" in args else "-cd") + 1]
        pytest.skip(f"composes with the reader's own config folder ({folder})")
    jobs, _ = job_overrides(args)
    for overrides in jobs:
        # searched keys (interval(...)) are the sweeper's to draw: composed without them
        overrides = [o for o in overrides if "interval(" not in o and "tag(" not in o]
        with initialize_config_dir(config_dir=CONF):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        if cfg.trainer.init_from:  # a path in an example: the file need not exist here
            init = tmp_path / "best.pt"
            init.touch()
            cfg.trainer.init_from = str(init)
        validate(cfg)


@pytest.mark.parametrize("where, args", ANALYSIS_COMMANDS, ids=[w for w, _ in ANALYSIS_COMMANDS])
def test_every_analysis_command_in_the_docs_parses(where, args):
    if args[:1] in (["--help"], ["-h"]):
        return
    analysis_parser().parse_args(args)  # argparse exits (fails the test) on a bad command


def test_the_docs_show_commands_at_all():
    # a change to the fences or the parsing above must not make the two tests above vacuous
    assert len(RUN_COMMANDS) >= 20 and len(ANALYSIS_COMMANDS) >= 10


def test_a_broken_command_is_caught():
    with pytest.raises(Exception, match=r"model\.hiden"):
        with initialize_config_dir(config_dir=CONF):
            compose("config", overrides=job_overrides(["model.hiden=[1]"])[0][0])
    with pytest.raises(SystemExit):
        analysis_parser().parse_args(["summarize", "multirun/widths"])


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("part", list(reference.PARTS))
def test_each_generated_part_of_the_docs_is_what_the_code_generates(part):
    """The key reference from the schema and conf/, the file table and the record's fields from
    the record package."""
    page, make = reference.PARTS[part]
    text = page.read_text()
    start, end = reference.span(text, part)
    assert text[start:end].strip() == make(), "run: python -m neuralforge.reference"


def test_every_schema_key_has_a_meaning():
    generated = reference.generate()
    assert not re.findall(r"^\| `[^`]+` \|.*\|  \|$", generated, flags=re.M)


def test_the_glossary_in_the_docs_is_the_one_report_uses():
    assert glossary.table() in (ROOT / "docs" / "analysis.md").read_text()


def test_the_help_page_lists_each_group_with_its_options_and_every_top_level_key():
    template = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "hydra" / "help" / "neuralforge.yaml"))["template"]
    listed = dict(re.findall(r"^ +(\+?\w+): (.+)$", template, flags=re.M))
    for group in reference.GROUPS:
        assert listed[group].split(", ") == reference.options(group)
    for group, extra in (("hparams_search", ["(none)"]), ("+experiment", []), ("anatomy", [])):
        shown = listed[group].split("   ")[0].split(", ")  # after three spaces: a remark
        assert shown == extra + sorted(p.stem for p in (ROOT / "conf" / group.lstrip("+")).glob("*.yaml"))
    keys = [f.name for f in fields(Config) if f.name not in reference.GROUPS and f.name != "seeds"]
    assert all(re.search(rf"^ +{k}\b", template, flags=re.M) for k in keys)


@pytest.mark.slow
def test_run_help_is_the_projects_page_without_internal_names():
    out = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("NeuralForge")
    assert "schema" not in out.stdout and "powered by Hydra" not in out.stdout


@pytest.mark.slow
def test_an_unknown_option_is_one_line_listing_the_real_options_only():
    out = subprocess.run([sys.executable, "run.py", "data=cifar"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    options = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")))
    assert out.returncode == 1 and out.stderr == f"error: data=cifar is not an option of data: use one of {options}\n"


def test_every_relative_link_in_the_docs_leads_to_a_file_and_heading_that_exist():
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
                if anchor not in slugs:
                    broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken


def test_the_design_pages_module_map_names_every_module_and_only_modules_that_exist():
    page = (ROOT / "docs" / "design.md").read_text()
    named = set(re.findall(r"^\| `([^`]+)` \|", page.split("## Modules")[1].split("\n## ")[0], flags=re.M))
    assert all((ROOT / p).exists() for p in named), sorted(p for p in named if not (ROOT / p).exists())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "neuralforge").rglob("*.py") if p.name != "__init__.py"}
    assert modules <= named, sorted(modules - named)


def test_the_design_pages_states_are_the_records():
    from neuralforge.record.schema import State

    life = (ROOT / "docs" / "design.md").read_text().split("## A run folder's life")[1].split("\n## ")[0]
    assert set(re.findall(r"`(\w+)`", life)) >= {s.value for s in State}
