"""Old and mirrored command spellings: deprecated ones run with a warning, group ones are the
same command object (DEVELOPERS.md: CLI commands stay valid)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from inferno.cli import DEPRECATED_COMMANDS, LAZY_COMMANDS, SUBCOMMANDS, cli


def test_emulate_load_runs_load_noise_with_a_warning() -> None:
    """`inferno emulate-load` is `inferno load-noise`: same checks, plus one warning line."""
    runner = CliRunner()
    old = runner.invoke(cli, ["emulate-load", "often"], env={"KUBECONFIG": ""})
    new = runner.invoke(cli, ["load-noise", "often"], env={"KUBECONFIG": ""})
    assert old.exit_code == new.exit_code == 2
    assert "argument INTERVAL" in old.output
    assert "inferno emulate-load is deprecated; use inferno load-noise" in old.output
    assert "deprecated" not in new.output


def test_deprecated_spellings_are_hidden_from_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed.isdisjoint(DEPRECATED_COMMANDS)
    assert set(DEPRECATED_COMMANDS.values()) <= listed


def test_sim_group_mirrors_emulate_and_sweep() -> None:
    """`inferno sim emulate` and `inferno sim sweep` are the top-level commands themselves."""
    ctx = click.Context(cli)
    group = cli.get_command(ctx, "sim")
    assert isinstance(group, click.Group)
    for sub, top in SUBCOMMANDS["sim"].items():
        assert top in LAZY_COMMANDS
        assert group.get_command(ctx, sub) is cli.get_command(ctx, top)


def test_sim_sweep_help_runs() -> None:
    result = CliRunner().invoke(cli, ["sim", "sweep", "--help"])
    assert result.exit_code == 0
    assert "sim sweep [OPTIONS] SWEEP" in result.output
