"""Plugin loading: tolerant of broken plugins, allow-listed, idempotent."""

from __future__ import annotations

import importlib

import pytest
from lmforge import hookimpl, plugins, registry
from lmforge.errors import PluginError


def _info(name: str) -> plugins.PluginInfo:
    return {i.name: i for i in plugins.plugin_infos()}[name]


def test_builtin_always_loads_and_comes_first(no_installed_plugins):
    infos = plugins.plugin_infos()
    assert infos[0].name == plugins.BUILTIN
    assert infos[0].status == plugins.LOADED


def test_installed_plugin_is_discovered_with_its_distribution(fake_site):
    fake_site.add_template_plugin("lmforge-alpha", "alpha_plugin", "alpha-chat")
    assert "alpha-chat" in registry.chat_templates()
    info = _info("alpha_plugin")
    assert (info.distribution, info.version, info.status) == ("lmforge-alpha", "0.1.0", "loaded")


def test_plugin_whose_import_raises_is_reported_and_others_work(fake_site):
    fake_site.add_broken_plugin("lmforge-broken", "broken_plugin")
    fake_site.add_template_plugin("lmforge-alpha", "alpha_plugin", "alpha-chat")
    assert "alpha-chat" in registry.chat_templates()
    broken = _info("broken_plugin")
    assert broken.status == "failed"
    assert broken.error == "ImportError: needs libbroken.so, which is not installed"


def test_misspelt_hook_name_fails_that_plugin_only(fake_site):
    fake_site.add("lmforge-typo", "typo_plugin", """
        from lmforge import hookimpl

        @hookimpl
        def register_chat_template(register):
            pass
    """)
    fake_site.add_template_plugin("lmforge-alpha", "alpha_plugin", "alpha-chat")
    assert "alpha-chat" in registry.chat_templates()
    typo = _info("typo_plugin")
    assert typo.status == "failed"
    assert "register_chat_template" in typo.error
    assert not plugins.get_plugin_manager().has_plugin("typo_plugin")


@pytest.mark.parametrize("allow", ["alpha_plugin", "lmforge-alpha", " alpha_plugin , other "])
def test_allow_list_loads_only_named_plugins(fake_site, monkeypatch, allow):
    fake_site.add_template_plugin("lmforge-alpha", "alpha_plugin", "alpha-chat")
    fake_site.add_template_plugin("lmforge-beta", "beta_plugin", "beta-chat")
    monkeypatch.setenv(plugins.ALLOW_ENV, allow)
    templates = registry.chat_templates()
    assert "alpha-chat" in templates and "beta-chat" not in templates
    assert _info("beta_plugin").status == "disabled"
    assert _info(plugins.BUILTIN).status == "loaded"


def test_empty_allow_list_loads_only_builtins(fake_site, monkeypatch):
    fake_site.add_template_plugin("lmforge-alpha", "alpha_plugin", "alpha-chat")
    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    assert "alpha-chat" not in registry.chat_templates()
    assert {i.name for i in plugins.plugin_infos() if i.status == "loaded"} == {plugins.BUILTIN}


def test_loading_is_idempotent(fake_site):
    fake_site.add("lmforge-alpha", "alpha_plugin", """
        from lmforge import hookimpl

        IMPORTS = globals().get("IMPORTS", 0) + 1
        calls = []

        @hookimpl
        def register_chat_templates(register):
            calls.append(1)
    """)
    pm = plugins.get_plugin_manager()
    assert plugins.get_plugin_manager() is pm
    registry.chat_templates()
    module = importlib.import_module("alpha_plugin")
    assert module.calls == [1]  # registered once, so its hook ran once
    plugins.register_plugin(module, name="alpha_plugin")  # already there: nothing happens
    plugins.register_plugin(module, name="alpha_again")  # same object under another name
    registry.chat_templates()
    assert module.calls == [1]  # nothing changed: the collection is not gathered again
    assert module.IMPORTS == 1


def test_reset_then_load_again_registers_the_same_plugins(fake_site):
    fake_site.add_template_plugin("lmforge-alpha", "alpha_plugin", "alpha-chat")
    assert "alpha-chat" in registry.chat_templates()
    plugins.reset()
    assert "alpha-chat" in registry.chat_templates()


class _Good:
    @staticmethod
    @hookimpl
    def register_chat_templates(register):
        register(type("T", (), {"name": "good-chat"})())


class _Raising:
    @staticmethod
    @hookimpl
    def register_chat_templates(register):
        raise RuntimeError("template file is missing")


def test_hook_that_raises_is_reported_and_others_still_run(no_installed_plugins):
    plugins.register_plugin(_Raising, name="raising")
    plugins.register_plugin(_Good, name="good")
    assert list(registry.chat_templates()) == ["good-chat"]
    raising = _info("raising")
    assert raising.status == "failed"
    assert raising.error == "register_chat_templates: RuntimeError: template file is missing"
    assert _info("good").status == "loaded"
    registry.chat_templates()  # the same error twice is recorded once
    assert _info("raising").error.count("template file is missing") == 1


def test_register_plugin_with_unknown_hook_raises_a_plugin_error(no_installed_plugins):
    class Typo:
        @staticmethod
        @hookimpl
        def register_engine(register):
            pass

    with pytest.raises(PluginError, match="'typo' cannot be registered"):
        plugins.register_plugin(Typo, name="typo")
    assert not plugins.get_plugin_manager().has_plugin("typo")


def test_unregister_plugin_removes_its_contributions(no_installed_plugins):
    plugins.register_plugin(_Good, name="good")
    assert "good-chat" in registry.chat_templates()
    plugins.unregister_plugin("good")
    assert "good-chat" not in registry.chat_templates()
    assert "good" not in {i.name for i in plugins.plugin_infos()}


def test_hook_order_follows_tryfirst_and_trylast(no_installed_plugins):
    order = []

    class Late:
        @staticmethod
        @hookimpl(trylast=True)
        def register_chat_templates(register):
            order.append("late")

    class Early:
        @staticmethod
        @hookimpl(tryfirst=True)
        def register_chat_templates(register):
            order.append("early")

    plugins.register_plugin(Late, name="late")
    plugins.register_plugin(Early, name="early")
    plugins.call_hook("register_chat_templates", register=lambda t: None)
    assert order == ["early", "late"]


def test_plugin_that_looks_up_the_registry_at_import_does_not_restart_discovery(fake_site):
    # The fake site comes first on sys.path, so this plugin loads before the installed ones.
    fake_site.add("lmforge-eager", "eager_plugin", """
        from lmforge import hookimpl, registry

        SEEN = sorted(registry.chat_templates())  # a lookup while plugins are being loaded

        @hookimpl
        def register_chat_templates(register):
            pass
    """)
    templates = registry.chat_templates()
    assert "internlm2" in templates and "llama3" in templates  # the installed built-ins
    pm = plugins.get_plugin_manager()
    for info in plugins.plugin_infos():
        if info.status == plugins.LOADED:
            assert pm.has_plugin(info.name), info


def test_registry_collections_are_gathered_once(fake_site):
    fake_site.add("lmforge-counting", "counting_plugin", """
        from lmforge import hookimpl

        CALLS = []

        @hookimpl
        def register_chat_templates(register):
            CALLS.append(1)
    """)
    registry.chat_templates()
    registry.chat_templates()
    import counting_plugin

    assert len(counting_plugin.CALLS) == 1
