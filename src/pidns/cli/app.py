"""The click group: subcommands load on demand, errors become one line on stderr."""

from __future__ import annotations

import importlib

import click

from pidns.cli.commands import COMMANDS, NS_HELP, SUMMARY
from pidns.cli.failure import exit_status, fail


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, _, attribute = entry[0].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, help=f"{SUMMARY}\n\n{NS_HELP}")
@click.version_option(package_name="pidns")
def cli() -> None:
    pass


def run(args: list[str]) -> int:
    try:
        result = cli.main(args, prog_name="pidns", standalone_mode=False)
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx else "pidns"
        return fail(f"{err.format_message()} (see '{where} --help')", 2)
    except click.ClickException as err:
        return fail(err.format_message(), err.exit_code)
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.Abort:
        return fail("aborted", 1)
    except (Exception, KeyboardInterrupt) as err:
        return exit_status(err)
    return result if isinstance(result, int) else 0
