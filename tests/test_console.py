"""`weaksound COMMAND --help`: every command of the console parses, and every option states its default."""
from __future__ import annotations

import argparse
import importlib

import pytest

from app import console


def _parsers(parser: argparse.ArgumentParser):
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("command", sorted(console.COMMANDS))
def test_every_option_of_every_command_states_its_default(command):
    module = importlib.import_module(console.COMMANDS[command][0])
    for prog, parser in _parsers(module.build_parser()):
        assert prog.startswith(f"weaksound {command}"), prog
        for action in parser._actions:
            if not action.option_strings or action.dest == "help" or action.required:
                continue  # a required option has no default (the usage line shows it unbracketed)
            text = action.help or ""
            assert "default" in text or "required" in text, f"{prog} {action.option_strings[0]}: {text!r}"


def test_the_console_lists_every_command_and_rejects_unknown_ones(capsys):
    assert console.main([]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in console.COMMANDS)
    assert console.main(["no-such-command"]) == 2
