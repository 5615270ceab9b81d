"""``lmforge lite``: compress a model.

``calibrate`` is built in; every other sub-command comes from a quantizer plugin's
:class:`lmforge.registry.QuantizerSpec` (``command`` and a lazy ``cli`` reference), resolved
only when that sub-command runs or shows its help. A quantizer lmforge knows of but that is not
installed still answers, with the distribution to install.
"""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from .. import registry
from ..errors import PluginError
from . import lite_options as opt
from .command import LmforgeCommand
from .console import console, err_console

# The quantizers lmforge's repository ships: command -> (distribution, folder).
KNOWN_QUANTIZERS = {
    "auto_awq": ("lmforge-quant-awq", "plugins/quant_awq"),
    "smooth_quant": ("lmforge-quant-smoothquant", "plugins/quant_smoothquant"),
}


def _install_hint(command: str) -> str:
    distribution, folder = KNOWN_QUANTIZERS[command]
    return (f"`lmforge lite {command}` comes with the {distribution} distribution; install it "
            f"(`pip install ./{folder}` from lmforge's repository).")


def _quantizer_commands() -> dict[str, registry.QuantizerSpec]:
    return {s.command: s for s in registry.quantizers().values() if s.cli is not None}


def _spec_command(spec: registry.QuantizerSpec) -> click.Command:
    app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    app.command(spec.command, cls=LmforgeCommand, help=None,
                short_help=spec.description or None)(
        registry.load_object(spec.cli)
    )
    command = typer.main.get_command(app)
    command.name = spec.command
    return command


def _missing_command(command: str) -> click.Command:
    def run() -> None:
        raise PluginError(_install_hint(command))

    distribution = KNOWN_QUANTIZERS[command][0]
    return click.Command(command, callback=run, short_help=f"Not installed: needs {distribution}.",
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


class LiteGroup(TyperGroup):
    """The ``lite`` group: its own commands, then the installed quantizers' commands, then the
    known quantizers that are not installed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        installed = [c for c in _quantizer_commands() if c not in own]
        missing = [c for c in KNOWN_QUANTIZERS if c not in own and c not in installed]
        return [*own, *installed, *missing]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        spec = _quantizer_commands().get(name)
        if spec is not None:
            return _spec_command(spec)
        return _missing_command(name) if name in KNOWN_QUANTIZERS else None


def _lite_root(ctx: typer.Context) -> None:
    """Compress a model: calibration, AWQ W4A16 and SmoothQuant W8A8."""
    if ctx.invoked_subcommand is not None:
        return
    help_text = ctx.get_help()
    if help_text:
        typer.echo(help_text)
    missing = [c for c in KNOWN_QUANTIZERS if c not in _quantizer_commands()]
    if len(missing) == len(KNOWN_QUANTIZERS):
        err_console.print(
            "No quantizer is installed: install lmforge-quant-awq (auto_awq) or "
            "lmforge-quant-smoothquant (smooth_quant), e.g. `pip install ./plugins/quant_awq` "
            "from lmforge's repository.", style="yellow", markup=False, soft_wrap=True,
        )
    raise typer.Exit()


def calibrate(
    model: opt.LiteModelPath,
    work_dir: opt.WorkDir = "./work_dir",
    calib_dataset: opt.CalibDataset = opt.CALIB_DEFAULTS["calib_dataset"],
    calib_samples: opt.CalibSamples = opt.CALIB_DEFAULTS["calib_samples"],
    calib_seqlen: opt.CalibSeqlen = opt.CALIB_DEFAULTS["calib_seqlen"],
    batch_size: opt.BatchSize = opt.CALIB_DEFAULTS["batch_size"],
    device: opt.Device = None,
) -> None:
    """Measure every linear's input channels (absolute max and mean) on calibration text.

    Writes calibration.json and calibration.pt into --work-dir; `lmforge lite auto_awq` and `lmforge lite smooth_quant` given that work dir and the same --calib-dataset, --calib-samples and --calib-seqlen reuse them.
    """
    from ..lite.calibrate import calibrate as run

    options = opt.calib_options(calib_dataset, calib_samples, calib_seqlen, batch_size, device)
    result = run(model, work_dir, options)
    console.print(
        f"Calibrated {len(result.meta.linears)} linears on {result.meta.tokens} tokens; "
        f"statistics in {work_dir}.", markup=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``lmforge lite``."""
    lite = typer.Typer(
        name="lite", cls=LiteGroup, invoke_without_command=True, add_completion=False,
        help="Compress a model: calibration, AWQ W4A16 and SmoothQuant W8A8.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    lite.callback()(_lite_root)
    lite.command("calibrate", cls=LmforgeCommand)(calibrate)
    app.add_typer(lite, name="lite")
