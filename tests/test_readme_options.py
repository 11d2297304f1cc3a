"""The documentation of the command line against its parser: README's training options, cli.py's command list."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import dcgan.cli
from dcgan.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
OPTION = re.compile(r"(?<![\w-])--[a-z0-9]+(?:-[a-z0-9]+)*")


def subcommands(parser: argparse.ArgumentParser, prefix: str = "dcgan") -> dict[str, argparse.ArgumentParser]:
    """Every command the parser runs, by its full name (`dcgan train`, `dcgan data export-png`, ...)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = subcommands(sub, f"{prefix} {name}")
                found.update(nested or {f"{prefix} {name}": sub})
    return found


def training_options_paragraph() -> str:
    """README's paragraph that lists the options of `dcgan train`."""
    paragraphs = re.split(r"\n\s*\n", README.read_text(encoding="utf-8"))
    (paragraph,) = [p for p in paragraphs if "Training options:" in p]
    return paragraph


def test_readme_lists_every_training_option_and_no_other() -> None:
    train = subcommands(build_parser())["dcgan train"]
    # a --x/--no-x switch is listed by its --x form
    options = {action.option_strings[0] for action in train._actions if action.option_strings[0] != "-h"}
    spellings = {name for action in train._actions for name in action.option_strings}
    listed = set(OPTION.findall(training_options_paragraph()))
    assert sorted(options - listed) == [], "options of `dcgan train` missing from README's list"
    assert sorted(listed - spellings) == [], "README lists options that `dcgan train` does not have"


def test_the_cli_docstring_names_every_command_once_and_no_other() -> None:
    lines = [line.strip() for line in dcgan.cli.__doc__.splitlines() if line.strip().startswith("dcgan ")]
    documented = [re.split(r"\s{2,}", line)[0] for line in lines]  # `dcgan data export-png      what it does`
    assert sorted(documented) == sorted(subcommands(build_parser()))
