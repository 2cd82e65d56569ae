"""The plugin manager: built-in plugins, entry-point discovery and the switches that control it.

Environment variables:

``WFE_LOAD_PLUGINS``
    Comma-separated distribution names whose ``wfcore`` entry points are loaded;
    set but empty loads none. Unset loads every installed plugin.
``WFE_DISABLED_PLUGINS``
    Comma-separated plugins to block: distribution or entry-point names (compared
    as pip compares names, as in ``WFE_LOAD_PLUGINS``), built-in module names, or
    the names of plugins passed in. A distribution's name blocks its own entry
    points only; an entry-point name blocks that name in every distribution. A
    name that matches none is logged as a warning.
``WFE_TRACE_PLUGINS``
    When set, every hook call (each implementation called) is logged at DEBUG
    level on the ``wfcore.plugins`` logger.

An installed plugin is registered under its entry-point name; when an earlier
distribution on ``sys.path`` has an entry point of that name too, under
``<distribution>:<entry-point name>``, so that both load.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, WorkflowError
from .stores.base import Store

__all__ = [
    "CONTRIBUTION_HOOKS",
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "SYNC_ONLY_HOOKS",
    "PluginInfo",
    "call_each",
    "call_first",
    "call_impl",
    "contribute",
    "hook_impls",
    "hooks_needing_self",
    "installed_plugins",
    "make_plugin_manager",
    "plugin_infos",
    "report_header",
    "trace_call",
    "why_not_loaded",
]

logger = logging.getLogger("wfcore.plugins")

#: The entry-point group third-party plugins register under.
ENTRY_POINT_GROUP = "wfcore"

#: Built-in plugins, registered through the same hooks as third-party ones.
DEFAULT_PLUGINS = (
    "wfcore.adapters",
    "wfcore.stores.sqlite",
    "wfcore.stores.memory",
)


#: Hooks whose implementations must be plain functions, as their specifications
#: say ("Must not be async"): the "pick one" hooks, whose first non-None result
#: is used as it is (a coroutine is not None), and the contribution hooks, which
#: are called without being awaited. An ``async def`` implementation of one is
#: refused when its plugin is registered.
SYNC_ONLY_HOOKS = frozenset(
    {
        "wfe_classify",
        "wfe_metrics",
        "wfe_open_store",
        "wfe_register_adapters",
        "wfe_register_commands",
        "wfe_register_handlers",
        "wfe_register_workflows",
        "wfe_report_header",
    }
)


#: Contribution hooks, and when each is called: once, for the plugins registered by
#: then. A plugin registered later (``engine.plugin_manager.register``) is not
#: asked for them, and is warned about.
CONTRIBUTION_HOOKS = {
    "wfe_register_adapters": "only as the engine is built",
    "wfe_register_handlers": "only as the engine is built",
    "wfe_register_workflows": "only as the engine is built",
    "wfe_open_store": "only as the engine opens its store",
    "wfe_register_commands": "only for installed plugins, as the wfe command line starts",
}


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, checking every plugin wherever it is registered (plugins
    such as wfe_kafka register more once the engine runs): a hook implementation
    that matches no spec, takes an argument its hook does not pass, is ``async
    def`` where the hook must be a plain function, or is a hook wrapper (wfcore
    calls implementations one at a time, so a wrapper would never run), and a class
    whose hooks need an instance, are a PluginError naming the plugin and the hook,
    and the plugin is not registered."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        #: Contribution hooks already called (see :data:`CONTRIBUTION_HOOKS`): a
        #: plugin registered afterwards is not asked for them.
        self.called_hooks: set[str] = set()

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        if name is None and plugin is not None:
            name = _free_name(self, plugin)
        _refuse_class(plugin, name)
        try:
            registered = super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            # pluggy before 1.7 leaves a plugin that fails validation half registered.
            if self.is_registered(plugin):
                self.unregister(plugin)
            raise PluginError(_invalid_message(self, plugin, name, exc)) from None
        if registered is None:
            return None  # blocked
        try:
            _refuse_unknown(self, self.get_hookcallers(plugin) or (), plugin)
            _refuse_async(self, plugin)
            _refuse_wrappers(self, plugin)
        except PluginError:
            self.unregister(plugin)
            raise
        _warn_too_late(self, plugin, registered)
        _warn_unmarked(self, plugin, registered)
        return registered

    def check_pending(self) -> None:
        """pluggy's check that every hook implementation has a spec, saying so as
        :meth:`register` does (register already refuses them: this finds only
        implementations registered before their spec was added)."""
        _refuse_unknown(self, _hook_callers(self))


def _refuse_class(plugin: Any, name: str | None) -> None:
    """A class whose hook implementations are methods is refused: pluggy would
    register it and call each method without ``self``, so every call would fail (a
    lifecycle hook's only logged), and a contribution hook's at engine creation
    with a message about a missing argument. An entry point naming the class, not
    an instance of it, is the usual way to get here."""
    if not isinstance(plugin, type):
        return
    needs_self = hooks_needing_self(plugin)
    if needs_self:
        raise PluginError(
            f"plugin {name or plugin.__name__!r} is the class {plugin.__qualname__}, whose "
            f"hook {needs_self[0]} takes self: register an instance, {plugin.__qualname__}() "
            "(an entry point names an instance made in its module, or the module itself)"
        )


def hooks_needing_self(plugin: type) -> list[str]:
    """The names of a plugin class's hook implementations that are plain methods:
    called on the class rather than an instance, each would miss ``self``."""
    return [
        attr
        for attr in dir(plugin)
        if getattr(getattr(plugin, attr, None), "wfcore_impl", None) is not None
        and inspect.isfunction(inspect.getattr_static(plugin, attr))
    ]


def _hook_callers(pm: pluggy.PluginManager) -> list[pluggy.HookCaller]:
    return [c for c in vars(pm.hook).values() if isinstance(c, pluggy.HookCaller)]


def _free_name(pm: pluggy.PluginManager, plugin: Any) -> str:
    """A name for a plugin registered without one: its module's or class's name
    (pluggy would use its id()), numbered when another plugin has it already. A
    blocked name is kept, so that the plugin stays blocked."""
    name = _plugin_name(plugin)
    number = 1
    while pm.get_plugin(name if number == 1 else f"{name}-{number}") is not None:
        number += 1
    return name if number == 1 else f"{name}-{number}"


def _unknown_hook(pm: pluggy.PluginManager, plugin_name: str, hook_name: str) -> str:
    known = [caller.name for caller in _hook_callers(pm) if caller.has_spec()]
    close = closest_hook(hook_name, known)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"plugin {plugin_name!r}: unknown hook {hook_name!r}{hint}"


def closest_hook(name: str, hooks: Iterable[str]) -> str | None:
    """The hook of ``hooks`` whose name is nearest ``name`` (a typo), if one is near.

    Compared without the prefix every hook shares, which made any name starting
    "wfe_o" near wfe_open_store."""
    stems = {hook.removeprefix("wfe_"): hook for hook in hooks}
    close = difflib.get_close_matches(name.removeprefix("wfe_"), list(stems), n=1)
    return stems[close[0]] if close else None


def _refuse_unknown(
    pm: pluggy.PluginManager, callers: Iterable[pluggy.HookCaller], plugin: Any = None
) -> None:
    """A PluginError for the first implementation (of ``plugin``, if given) among
    ``callers`` whose hook has no spec."""
    for caller in callers:
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if (plugin is None or impl.plugin is plugin) and not impl.optionalhook:
                raise PluginError(_unknown_hook(pm, impl.plugin_name, caller.name))


def _invalid_message(
    pm: pluggy.PluginManager, plugin: Any, name: str | None, exc: pluggy.PluginValidationError
) -> str:
    """pluggy's refusal in one line, naming the plugin by its name; for the usual
    one, an argument the hook does not pass, in words of our own."""
    plugin_name = name or _plugin_name(plugin)
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        caller = getattr(pm.hook, opts.get("specname") or attr, None)
        if caller is None or caller.spec is None:
            continue
        try:
            parameters = inspect.signature(getattr(plugin, attr)).parameters.values()
        except (TypeError, ValueError):
            continue
        known = set(caller.spec.argnames) | set(caller.spec.kwargnames)
        unknown = [
            p.name
            for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is p.empty
            and p.name not in known
            and p.name != "self"
        ]
        if unknown:
            return (
                f"plugin {plugin_name!r}: {caller.name} takes {', '.join(map(repr, unknown))}, "
                f"which the hook does not pass (it passes: {', '.join(caller.spec.argnames)})"
            )
    # pluggy's own words name the plugin (by the name it is registered under) and the hook.
    return " ".join(str(exc).split())


def _refuse_async(pm: pluggy.PluginManager, plugin: Any) -> None:
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.name not in SYNC_ONLY_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            function = impl.function
            if impl.plugin is not plugin or not (
                inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
            ):
                continue
            firstresult = caller.spec is not None and caller.spec.opts.get("firstresult")
            why = (
                "its first result that is not None is used as it is, and a coroutine is not None"
                if firstresult
                else "it is called without being awaited, so the coroutine would never run"
            )
            raise PluginError(
                f"plugin {impl.plugin_name!r}: {caller.name} must be a plain function, "
                f"not async def ({why})"
            )


# (plugin, hook) pairs warned about: once per process, not once per engine.
_WARNED_UNMARKED: set[tuple[str, str]] = set()


def _refuse_wrappers(pm: pluggy.PluginManager, plugin: Any) -> None:
    """wfcore calls each implementation on its own (to name the plugin that fails),
    never through pluggy's call loop, so a hook wrapper would be called as a plain
    function: its generator would never run (a lifecycle hook's wrapper did nothing,
    a classifier's was taken for a classification). Refused instead."""
    for caller in pm.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin or not (impl.wrapper or impl.hookwrapper):
                continue
            kind = "wrapper=True" if impl.wrapper else "hookwrapper=True"
            raise PluginError(
                f"plugin {impl.plugin_name!r}: {caller.name} is a hook wrapper ({kind}), "
                "which wfcore does not run: it calls each implementation on its own; "
                "make it a plain implementation (tryfirst=True or trylast=True to order it)"
            )


def _warn_unmarked(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Warn of a function named like a hook but without ``@hookimpl``: pluggy only
    calls marked ones, so it would never be called, and nothing else would say so."""
    for caller in _hook_callers(pm):
        if not caller.has_spec():
            continue
        try:
            function = getattr(plugin, caller.name, None)
        except Exception:  # a property that fails: no hook, and not ours to report
            continue
        if not callable(function) or pm.parse_hookimpl_opts(plugin, caller.name) is not None:
            continue
        if (name, caller.name) in _WARNED_UNMARKED:
            continue
        _WARNED_UNMARKED.add((name, caller.name))
        logger.warning(
            "plugin %r: %s is not marked @hookimpl, so it is never called "
            "(decorate it with @wfcore.hookimpl)",
            name,
            caller.name,
        )


def _warn_too_late(pm: _PluginManager, plugin: Any, name: str) -> None:
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.name in pm.called_hooks:
            advice = (
                ""
                if caller.name == "wfe_register_commands"
                else "; pass the plugin to ECSWorkflowEngine(plugins=[...]) instead"
            )
            logger.warning(
                "plugin %r was registered too late: its %s is not called (%s%s)",
                name,
                caller.name,
                CONTRIBUTION_HOOKS[caller.name],
                advice,
            )


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def make_plugin_manager(
    load_entry_points: bool = True, plugins: tuple[Any, ...] | list[Any] = ()
) -> pluggy.PluginManager:
    """A new plugin manager with the built-ins, installed plugins and ``plugins``.

    Each engine gets its own manager, so tests and embedded apps never share
    state. Raises PluginError when a hook implementation matches no spec, takes
    an argument its hook does not pass, is an ``async def`` one of a hook in
    :data:`SYNC_ONLY_HOOKS` or a hook wrapper, or when a plugin is a class whose
    hooks need an instance; so does registering such a plugin with the manager
    later, and a plugin registered too late for a contribution hook it implements
    (:data:`CONTRIBUTION_HOOKS`) is warned about. A plugin registered without a
    name is named after its module or class.
    """
    pm = _PluginManager("wfcore")
    pm.add_hookspecs(hookspecs)
    disabled = _env_list("WFE_DISABLED_PLUGINS")
    for name in disabled or ():
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    entry_points = _entry_points() if load_entry_points or disabled else []
    if load_entry_points:
        _load_entry_points(pm, entry_points)
    for plugin in plugins:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    if disabled:
        passed_in = [_plugin_name(plugin) for plugin in plugins]
        _warn_unknown(
            "WFE_DISABLED_PLUGINS", disabled, entry_points, [*DEFAULT_PLUGINS, *passed_in]
        )
    if os.environ.get("WFE_TRACE_PLUGINS"):
        _TRACED.add(pm)
    pm.check_pending()
    # The wfe command line asks its manager's plugins for commands as soon as it
    # has built it; an engine never asks.
    pm.called_hooks.add("wfe_register_commands")
    return pm


# Managers made with WFE_TRACE_PLUGINS set: every implementation called is logged by
# trace_call (wfcore calls them one at a time, to isolate failures).
_TRACED: weakref.WeakSet[pluggy.PluginManager] = weakref.WeakSet()


def trace_call(pm: pluggy.PluginManager, hook_name: str, impl: Any) -> None:
    """Log a call of one hook implementation, as WFE_TRACE_PLUGINS asks."""
    if pm in _TRACED:
        logger.debug("%s: calling %s", hook_name, impl.plugin_name)


def hook_impls(
    pm: pluggy.PluginManager, hook_name: str, *, registration_order: bool = False
) -> Iterator[pluggy.HookImpl]:
    """A hook's implementations, for wfcore to call one at a time (to isolate
    failures): in pluggy's order (the last registered first) or, with
    ``registration_order``, as registered (trylast built-ins first). Each is
    traced as it is handed out (WFE_TRACE_PLUGINS), and a contribution hook is
    noted as called (:data:`CONTRIBUTION_HOOKS`)."""
    if isinstance(pm, _PluginManager) and hook_name in CONTRIBUTION_HOOKS:
        pm.called_hooks.add(hook_name)
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    for impl in impls if registration_order else reversed(impls):
        trace_call(pm, hook_name, impl)
        yield impl


def call_impl(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    """Call one hook implementation with those of ``kwargs`` it takes."""
    return impl.function(*[kwargs[name] for name in impl.argnames])


def report_header(engine: Any) -> list[str]:
    """The lines plugins report about ``engine`` (``wfe_report_header``), in the order
    the plugins were registered (built-ins, installed ones, those passed in); a
    plugin failing to report is named in a line of its own instead."""
    lines: list[str] = []
    for impl in hook_impls(engine.plugin_manager, "wfe_report_header", registration_order=True):
        try:
            said = call_impl(impl, engine=engine)
        except Exception as exc:
            lines.append(f"{impl.plugin_name}: cannot report ({type(exc).__name__}: {exc})")
            continue
        if said is None:
            continue
        if isinstance(said, str):
            lines.append(said)
        elif isinstance(said, (list, tuple)):
            lines.extend(str(line) for line in said)
        else:
            # Not iterated: a dict would give its keys, a number raise in the
            # command's start-up, far from the plugin at fault.
            lines.append(
                f"{impl.plugin_name}: cannot report (wfe_report_header returned "
                f"{type(said).__name__} {said!r}, not a line or a list of lines)"
            )
    return lines


def call_each(
    pm: pluggy.PluginManager,
    hook_name: str,
    *,
    firstresult: bool = False,
    builtins_first: bool = False,
    **kwargs: Any,
) -> list[Any]:
    """Call a hook's implementations one by one, in pluggy's order (or, with
    ``builtins_first``, its reverse: trylast built-ins first, so that later ones
    win); return their results that are not None (with ``firstresult``, stop at
    the first).

    An implementation that raises (other than a WorkflowError, which says what is
    wrong already) is reported as a PluginError naming its plugin: a traceback
    from inside pluggy says neither which plugin nor which hook.
    """
    results = []
    for _, result in _each(pm, hook_name, builtins_first, kwargs):
        results.append(result)
        if firstresult:
            break
    return results


def call_first(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> tuple[str, Any] | None:
    """Like ``call_each(firstresult=True)``, but also name the plugin that answered:
    ``(plugin name, result)``, or None when none did.

    For ``wfe_open_store``, the plugins after the one that answered are asked too,
    only to warn (once per process) of another that serves the URL as well: a
    plugin that takes over a scheme, ``sqlite://`` say, would otherwise do so
    unseen. What they answer is left unopened and unused.
    """
    found = next(_each(pm, hook_name, False, kwargs), None)
    if found is not None and hook_name == "wfe_open_store":
        _warn_of_other_stores(pm, found[0], kwargs["url"])
    return found


# (scheme, plugin used, plugin passed over) pairs warned about: once per process.
_WARNED_STORES: set[tuple[str, str, str]] = set()


def _warn_of_other_stores(pm: pluggy.PluginManager, used: str, url: str) -> None:
    """Warn of each plugin after ``used`` (in the order wfcore asks them) that would
    open ``url`` as well."""
    scheme = _scheme(url)
    # In the order hook_impls hands them out, but traced only as each is called:
    # WFE_TRACE_PLUGINS lists the calls made, not those that might have been.
    impls = list(reversed(pm.hook.wfe_open_store.get_hookimpls()))
    names = [impl.plugin_name for impl in impls]
    for impl in impls[names.index(used) + 1 :]:
        key = (scheme, used, impl.plugin_name)
        if key in _WARNED_STORES:
            continue
        trace_call(pm, "wfe_open_store", impl)
        if not _answers(impl, url):
            continue
        _WARNED_STORES.add(key)
        logger.warning(
            "plugins %r and %r both open %s stores; %r wins (wfcore asks the plugin "
            "registered last first, and the built-in stores after all others); "
            "WFE_DISABLED_PLUGINS=%s keeps that and ends this warning",
            used,
            impl.plugin_name,
            scheme,
            used,
            impl.plugin_name,
        )


def _scheme(url: str) -> str:
    """``sqlite://`` for ``sqlite:///a/b.db``: how the messages name a URL's kind."""
    return url.partition(":")[0] + "://"


def _answers(impl: pluggy.HookImpl, url: str) -> bool:
    """Whether a ``wfe_open_store`` implementation gives a store for ``url``; one
    that raises gives none (a URL it cannot take, though of its scheme), and so does
    one that returns what is no store (its class, say), which the engine refuses."""
    try:
        return isinstance(call_impl(impl, url=url), Store)
    except Exception as exc:
        logger.debug(
            "%s: wfe_open_store(%r) raised %s: %s", impl.plugin_name, url, type(exc).__name__, exc
        )
        return False


def _each(
    pm: pluggy.PluginManager, hook_name: str, builtins_first: bool, kwargs: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    for impl in hook_impls(pm, hook_name, registration_order=builtins_first):
        try:
            result = call_impl(impl, **kwargs)
        except WorkflowError:
            raise  # a deliberate refusal, already saying what is wrong
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
            ) from exc
        if result is not None:
            yield impl.plugin_name, result


def contribute(
    pm: pluggy.PluginManager,
    hook_name: str,
    register: Callable[[str, Any, Any], None],
    *,
    builtins_first: bool = False,
) -> None:
    """Call each implementation of a ``wfe_register_*`` hook with a
    ``register(key, value)`` of its own, which calls ``register(plugin_name, key,
    value)``, so that a duplicate can name both plugins.

    Whatever goes wrong, ``register`` refusing what it is given or the
    implementation raising, is a PluginError naming the plugin and the hook: with
    several plugins installed, nothing else points to the one at fault.
    """
    for impl in hook_impls(pm, hook_name, registration_order=builtins_first):
        refused: list[Exception] = []
        one = _register_for(impl.plugin_name, hook_name, register, refused)
        try:
            call_impl(impl, register=one)
        except Exception as exc:
            # register's refusals and WorkflowErrors say what is wrong already.
            said = exc in refused or isinstance(exc, WorkflowError)
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                + (str(exc) if said else f"{type(exc).__name__}: {exc}")
            ) from exc


#: The arguments of each contribution hook's ``register``, as the hook
#: specifications name them (a plugin may pass them by name).
_REGISTER_ARGS = {
    "wfe_register_adapters": ("task_type", "adapter"),
    "wfe_register_handlers": ("classification", "handler"),
    "wfe_register_workflows": ("name", "phases"),
}


def _register_for(
    plugin_name: str,
    hook_name: str,
    register: Callable[[str, Any, Any], None],
    refused: list[Exception],
) -> Callable[..., None]:
    """One plugin's ``register(key, value)``, noting what ``register`` refuses; it
    takes its two arguments by position or by the names the hook's documentation
    gives them, and says so when called otherwise."""
    names = _REGISTER_ARGS.get(hook_name, ("key", "value"))
    signature = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    )

    def register_one(*args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            wrong = TypeError(f"register takes ({', '.join(names)}): {exc}")
            refused.append(wrong)
            raise wrong from None
        try:
            register(plugin_name, *bound.args)
        except (WorkflowError, TypeError, ValueError) as exc:
            refused.append(exc)
            raise

    return register_one


def _normalized(name: str) -> str:
    """A distribution name as pip compares them: qa_plug, QA-Plug and qa.plug match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _plugin_name(plugin: Any) -> str:
    # pluggy names an instance by its id(); its class name is what a log reader needs.
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _entry_points() -> list[Any]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _dist_name(ep: Any) -> str | None:
    return ep.dist.name if ep.dist is not None else None


def _named_in(names: list[str], ep_name: str, dist_name: str | None) -> bool:
    """Whether ``names`` (from WFE_LOAD_PLUGINS or WFE_DISABLED_PLUGINS) name this
    plugin, by entry-point or distribution name, as pip compares names."""
    wanted = {_normalized(name) for name in names}
    known = {_normalized(ep_name), _normalized(dist_name or "")}
    if dist_name:
        known.add(_normalized(f"{dist_name}:{ep_name}"))  # as wfe plugins may show it
    return bool(known & wanted)


def _kept_out(
    ep_name: str, dist_name: str | None, wanted: list[str] | None, disabled: list[str] | None
) -> str | None:
    if wanted is not None and not wanted:
        return "WFE_LOAD_PLUGINS is empty"
    if wanted is not None and not _named_in(wanted, ep_name, dist_name):
        return "WFE_LOAD_PLUGINS does not name it"
    if disabled and _named_in(disabled, ep_name, dist_name):
        return _DISABLED
    return None


_DISABLED = "disabled by WFE_DISABLED_PLUGINS"


def why_not_loaded(ep_name: str, dist_name: str | None) -> str | None:
    """Why WFE_LOAD_PLUGINS or WFE_DISABLED_PLUGINS keep this installed plugin
    (entry-point and distribution name) from loading, in a few words; None if they
    let it load."""
    return _kept_out(
        ep_name, dist_name, _env_list("WFE_LOAD_PLUGINS"), _env_list("WFE_DISABLED_PLUGINS")
    )


def installed_plugins() -> list[tuple[str, str | None]]:
    """Every installed plugin, loaded or not: (entry-point name, distribution name)."""
    return sorted({(ep.name, _dist_name(ep)) for ep in _entry_points()}, key=str)


def not_loaded_plugins() -> str:
    """The installed plugins WFE_LOAD_PLUGINS or WFE_DISABLED_PLUGINS keep out, and
    why, grouped by reason ("acme is disabled by WFE_DISABLED_PLUGINS"); "" if none."""
    kept: dict[str, list[str]] = {}
    for name, dist in installed_plugins():
        reason = why_not_loaded(name, dist)
        if reason is not None:
            same = dist is None or dist.replace("_", "-").lower() == name.replace("_", "-").lower()
            kept.setdefault(reason, []).append(name if same else f"{name} ({dist})")
    parts = []
    for reason, names in kept.items():
        listed = ", ".join(names)
        if reason == "WFE_LOAD_PLUGINS is empty":
            parts.append(f"WFE_LOAD_PLUGINS is empty; installed: {listed}")
        elif reason.startswith("WFE_LOAD_PLUGINS"):
            parts.append(f"WFE_LOAD_PLUGINS names none of the installed {listed}")
        else:
            parts.append(f"{listed} {reason}")
    return "; ".join(parts)


def _registration_names(entry_points: list[Any]) -> list[str]:
    """The name each entry point's plugin is registered under: its entry-point
    name, or ``<distribution>:<name>`` when an earlier distribution (on
    ``sys.path``) has an entry point of that name too. Decided from every installed
    entry point, whichever are loaded, so that a plugin's name does not change
    with WFE_LOAD_PLUGINS or WFE_DISABLED_PLUGINS."""
    first_dist: dict[str, str | None] = {}
    names = []
    for ep in entry_points:
        dist_name = _dist_name(ep)
        if first_dist.setdefault(ep.name, dist_name) == dist_name:
            names.append(ep.name)
        else:
            names.append(f"{dist_name or ep.value}:{ep.name}")
    return names


def _load_entry_points(pm: pluggy.PluginManager, entry_points: list[Any]) -> None:
    """Register the plugins of ``entry_points`` that WFE_LOAD_PLUGINS and
    WFE_DISABLED_PLUGINS let load, and block the disabled ones; those registered
    already are left as they are, so that loading twice registers nothing twice."""
    wanted = _env_list("WFE_LOAD_PLUGINS")
    disabled = _env_list("WFE_DISABLED_PLUGINS")
    if wanted:
        _warn_unknown("WFE_LOAD_PLUGINS", wanted, entry_points)
    for ep, name in zip(entry_points, _registration_names(entry_points), strict=True):
        dist_name = _dist_name(ep)
        reason = _kept_out(ep.name, dist_name, wanted, disabled)
        if reason is not None:
            if reason == _DISABLED:
                # Blocked under the name it would have, so that registering it
                # later by that name does not bring it back.
                pm.set_blocked(name)
            continue
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"cannot load plugin {name!r} ({ep.value}): {exc}") from exc
        pm.register(plugin, name=name)
        _DIST_OF[name] = (dist_name, ep.dist.version if ep.dist is not None else None)


# (variable, name) pairs warned about: once per process, not once per engine.
_WARNED: set[tuple[str, str]] = set()


def _warn_unknown(
    variable: str, names: list[str], entry_points: list[Any], others: Iterable[str] = ()
) -> None:
    """A name in WFE_LOAD_PLUGINS or WFE_DISABLED_PLUGINS that matches no plugin is
    most likely a typo: it loads or disables nothing. Entry-point and distribution
    names compare as pip compares them; ``others`` (built-ins, plugins passed in),
    which are blocked by their exact name, exactly."""
    installed = {ep.name for ep in entry_points}
    installed |= {ep.dist.name for ep in entry_points if ep.dist is not None}
    qualified = {f"{ep.dist.name}:{ep.name}" for ep in entry_points if ep.dist is not None}
    normalized = {_normalized(name) for name in installed | qualified}
    exact = set(others)
    for name in names:
        if name in exact or _normalized(name) in normalized or (variable, name) in _WARNED:
            continue
        _WARNED.add((variable, name))
        if exact:
            logger.warning(
                "%s names %r, which is no plugin, so it disables nothing "
                "(installed: %s; built in or passed in: %s)",
                variable,
                name,
                ", ".join(sorted(installed)) or "none",
                ", ".join(sorted(exact)),
            )
        else:
            logger.warning(
                "%s names %r, which is no installed plugin (installed: %s)",
                variable,
                name,
                ", ".join(sorted(installed)) or "none",
            )


# Entry-point name -> (distribution, version); filled as plugins load.
_DIST_OF: dict[str, tuple[str | None, str | None]] = {}


class PluginInfo(dict[str, Any]):
    """What ``wfe plugins`` shows about one plugin: name, package, version, hooks;
    for a store plugin (``wfe_open_store``), the URL schemes it is known to serve
    (``store_schemes``)."""


#: A URL of each built-in store's scheme, to ask store plugins whether they serve it.
_BUILTIN_SCHEME_URLS = ("sqlite:///wfe-scheme-probe/wfe.db", "memory://")


def plugin_infos(
    pm: pluggy.PluginManager, include_builtins: bool = False, store_urls: Iterable[str] = ()
) -> list[PluginInfo]:
    """Describe the registered plugins, sorted by name.

    ``store_schemes``: the schemes (``sqlite://``) a plugin's ``wfe_open_store``
    opens a store for, of those it can be asked about: the built-in stores'
    schemes and those of ``store_urls`` (the store a command would use, say). A
    plugin's own schemes cannot be listed otherwise: the hook is given a URL and
    answers it or not. Asking builds a store and leaves it unopened.
    """
    probes = list(dict.fromkeys([*_BUILTIN_SCHEME_URLS, *store_urls]))
    schemes: dict[str, list[str]] = {}
    for impl in pm.hook.wfe_open_store.get_hookimpls():
        served = [_scheme(url) for url in probes if _answers(impl, url)]
        schemes[impl.plugin_name] = list(dict.fromkeys(served))
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        builtin = name in DEFAULT_PLUGINS
        if builtin and not include_builtins:
            continue
        dist, version = _DIST_OF.get(name, (None, None))
        if builtin:
            dist, version = "wfcore", importlib.metadata.version("wfcore")
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or ())
        info = PluginInfo(name=name, package=dist, version=version, builtin=builtin, hooks=hooks)
        if name in schemes:
            info["store_schemes"] = schemes[name]
        infos.append(info)
    return sorted(infos, key=lambda info: info["name"])
