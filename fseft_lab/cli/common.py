"""What every ``fseft-lab`` subcommand shares: help that shows defaults, the common options."""
from __future__ import annotations

import argparse

PROFILE_HELP = "run profile: cpu, gpu, paper or auto (default: $FSEFT_PROFILE, else auto: gpu with CUDA, cpu without)"
CHECKPOINT_HELP = "foundation model: a zoo name (fseft-lab zoo list) or a weights file"


class HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default: the value, or the flag in effect for an on/off
    switch. Help that states its default in words (``default: the profile's``) is left as it is."""

    def _get_help_string(self, action):
        text = (action.help or "").replace(" (default: %(default)s)", "")   # Python 3.10 adds it to switches
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {action.option_strings[0 if action.default else 1]})"
        if "default" in text or action.nargs == 0 or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        default = action.default
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def subcommand(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=HelpWithDefaults)


def largest_component_switch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the largest connected component of each structure that is anatomically one piece "
                             "(organs, not lesions or bone); --no-largest-component keeps the raw masks")
