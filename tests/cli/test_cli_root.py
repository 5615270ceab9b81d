"""The root command: version, help, global options, ``lmforge list``, ``lmforge plugins``."""

from __future__ import annotations

import json

from lmforge import __version__, hookimpl, plugins

# `lmdeploy list`, as LMDeploy's documentation shows it: every name must be available here too.
LMDEPLOY_TEMPLATES = (
    "baichuan2 chatglm codellama dbrx deepseek deepseek-coder deepseek-vl falcon gemma internlm "
    "internlm2 llama llama2 mistral mixtral puyu qwen solar ultracm ultralm vicuna wizardlm yi "
    "yi-vl"
).split()


def test_version(cli):
    for flag in ("--version", "-v"):
        result = cli(flag)
        assert result.exit_code == 0
        assert result.stdout == f"{__version__}\n"


def test_help_lists_the_commands(cli):
    for args in (("--help",), ("-h",), ()):
        result = cli(*args)
        assert result.exit_code == 0
        assert "Usage: lmforge" in result.stdout
        for command in ("list", "check_env", "plugins"):
            assert f" {command} " in result.stdout, command


def test_log_level_option_and_env(cli, monkeypatch):
    import logging

    assert cli("--log-level", "debug", "plugins", "--json").exit_code == 0
    assert logging.getLogger("lmforge").level == logging.DEBUG
    monkeypatch.setenv("LMFORGE_LOG_LEVEL", "ERROR")
    assert cli("plugins", "--json").exit_code == 0
    assert logging.getLogger("lmforge").level == logging.ERROR
    bad = cli("--log-level", "loud", "list")
    assert bad.exit_code == 2
    assert "loud" in bad.stderr


def _template_names(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    assert lines[0] == "The supported chat template names are:"
    return lines[1:lines.index("")]


def test_list_prints_lmdeploy_template_names_one_per_line(cli):
    result = cli("list")
    assert result.exit_code == 0
    names = _template_names(result.stdout)
    assert names == sorted(set(names))
    missing = sorted(set(LMDEPLOY_TEMPLATES) - set(names))
    assert not missing, f"templates missing from `lmforge list`: {missing}"
    for section in ("Engines:", "Quantizers:", "Model architectures:"):
        assert section in result.stdout.splitlines()


def test_list_without_the_templates_plugin_says_how_to_install_it(cli, monkeypatch):
    installed = plugins.entry_points

    def without_templates(group):
        return [ep for ep in installed(group=group) if ep.name != "templates"]

    monkeypatch.setattr(plugins, "entry_points", without_templates)
    result = cli("list")
    assert result.exit_code == 0
    assert _template_names(result.stdout) == []
    assert result.stderr == (
        "The built-in chat templates are not installed; install them with "
        "`pip install lmforge-templates`.\n"
    )


def test_list_with_the_templates_plugin_disabled_says_how_to_enable_it(cli, no_installed_plugins):
    result = cli("list")
    assert result.exit_code == 0
    assert _template_names(result.stdout) == []
    assert "add 'templates' to LMFORGE_LOAD_PLUGINS" in result.stderr


def test_list_shows_what_plugins_register(cli, no_installed_plugins):
    from lmforge.registry import EngineSpec, ModelSpec, QuantizerSpec

    class Provider:
        @staticmethod
        @hookimpl
        def register_engines(register):
            register(EngineSpec("fake", runner="x:Y", config_class="x:C",
                                description="A fake engine", plugin="provider"))

        @staticmethod
        @hookimpl
        def register_quantizers(register):
            register(QuantizerSpec("fq", command="fake_quant", format="w4", engines=("fake",)))

        @staticmethod
        @hookimpl
        def register_models(register):
            register(ModelSpec("FakeForCausalLM", adapter="x:Z", engines=("fake",)))

    plugins.register_plugin(Provider, name="provider")
    lines = cli("list").stdout.splitlines()
    assert lines[lines.index("Engines:") + 1].split() == ["fake", "A", "fake", "engine", "[provider]"]
    assert lines[lines.index("Quantizers:") + 1].split()[:4] == ["fq", "`lmforge", "lite", "fake_quant`"]
    assert lines[lines.index("Model architectures:") + 1].split() == ["FakeForCausalLM", "engines:", "fake"]


def test_plugins_table_and_json(cli, no_installed_plugins):
    table = cli("plugins")
    assert table.exit_code == 0
    for column in ("name", "distribution", "version", "status", "error"):
        assert column in table.stdout
    rows = json.loads(cli("plugins", "--json").stdout)
    builtin = rows[0]
    assert (builtin["name"], builtin["status"]) == ("builtin", "loaded")
    assert set(builtin) == {"name", "distribution", "version", "module", "status", "error"}


def test_early_log_level_reads_only_global_options(monkeypatch):
    from lmforge.cli.main import _early_log_level

    monkeypatch.delenv("LMFORGE_LOG_LEVEL", raising=False)
    assert _early_log_level([]) == "WARNING"
    assert _early_log_level(["--log-level", "debug", "list"]) == "DEBUG"
    assert _early_log_level(["--log-level=info", "list"]) == "INFO"
    assert _early_log_level(["serve", "api_server", "--log-level", "DEBUG"]) == "WARNING"
    assert _early_log_level(["--log-level", "nonsense"]) == "WARNING"  # click reports it later
    monkeypatch.setenv("LMFORGE_LOG_LEVEL", "error")
    assert _early_log_level(["list"]) == "ERROR"
