"""The ``ui`` command, shared by ``wfe ui`` and ``python -m wfe_flaskui``."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["ui_command"]


@click.command("ui", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=5000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any)."
)
@click.option(
    "--store",
    envvar="WFE_STORE",
    help="Store URL [env WFE_STORE; default: sqlite:///<cwd>/.wfe/wfe.db].",
)
@click.option(
    "--worker",
    metavar="MODULE:ATTR",
    help="Also run this app's engine (an engine or a factory) here: a one-process set-up.",
)
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="Use this app's engine without running its worker, beside `wfe worker` "
    "processes: tasks finished by answers or cancels given in the dashboard then run "
    "the app's completion callbacks and its plugins' hooks (completed, cancelled); "
    "without it (or --worker) they do not run at all, a webhook they post is lost. "
    "Not with --worker, which loads the app already.",
)
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option(
    "--max-body",
    metavar="SIZE",
    envvar="WFE_UI_MAX_BODY",
    default="1MiB",
    show_default=True,
    callback=lambda ctx, param, value: _from_env(ctx, param, _size_option, value),
    help="The largest request taken, a file uploaded with an answer or to the API "
    "included: bytes, or with a unit (KiB, MiB, GiB) [env WFE_UI_MAX_BODY].",
)
@click.option(
    "--allow-define",
    is_flag=True,
    help="Take define_workflow tasks from the submit form and the API [env WFE_UI_ALLOW_DEFINE].",
)
@click.option(
    "--user-header",
    metavar="HEADER",
    callback=lambda ctx, param, value: _header_option(value),
    help="Take who each person is from this request header, set by an authenticating "
    "proxy in front of the dashboard (X-Forwarded-User); requests without it are "
    "refused [env WFE_UI_USER_HEADER].",
)
@click.pass_context
def ui_command(
    ctx: click.Context,
    host: str,
    port: int,
    store: str | None,
    worker: str | None,
    app: str | None,
    access_log: bool,
    max_body: int,
    allow_define: bool,
    user_header: str | None,
) -> None:
    """Serve the web dashboard (tasks, inbox, submit, workflows).

    It opens the same store as your workers: run it beside `wfe worker`
    processes (with --app, so that what is changed here runs the app's callbacks),
    or give --worker to run the engine in this process too. Listening
    on anything but a loopback address needs WFE_UI_TOKEN, an access token of 16
    characters or more that every request must then present (browsers log in
    once). WFE_UI_SECRET signs
    the session cookie (default: random per process). With --user-header, answers,
    cancels and retries record who made them. With KAFKA_BROKERS set and
    wfe_kafka installed, submitted tasks are published to the tasks topic instead
    of written to the store (the workers consuming it store and run them).
    """
    from wfcore import WorkflowError
    from wfcore.cli._base import EXIT_INTERRUPTED, store_url

    from .bridge import BridgeError
    from .server import BothAppsError, UnsafeBindError, UnusableStoreError, serve

    if ctx.get_parameter_source("store") is click.core.ParameterSource.ENVIRONMENT:
        if ctx.parent is not None:
            store = None  # under wfe, whose --store read WFE_STORE too and checks it
        elif store is not None and not store.strip():
            raise click.UsageError("WFE_STORE is blank: give a store URL, or unset it")
    store = store_url(ctx, store)
    try:
        serve(
            host,
            port,
            store=store,
            worker=worker,
            app=app,
            access_log=access_log,
            allow_define=True if allow_define else None,
            user_header=user_header,
            max_body=max_body,
            announce=lambda line: click.echo(line, err=True),
        )
    except (UnsafeBindError, UnusableStoreError, BothAppsError) as exc:
        raise click.UsageError(str(exc)) from None
    except (WorkflowError, BridgeError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    except KeyboardInterrupt:
        # Stopped by Ctrl-C: 130, as every wfe command (python -m wfe_flaskui too,
        # where click alone would say "Aborted!" and exit 1); SIGTERM is a clean 0.
        ctx.exit(EXIT_INTERRUPTED)


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def _from_env(ctx: click.Context, param: click.Parameter, check: Any, value: Any) -> Any:
    """``check(value)``; a value refused that came from the environment names its
    variable, since click names the option, which the command line may not hold."""
    try:
        return check(value)
    except click.BadParameter as exc:
        source = ctx.get_parameter_source(param.name or "")
        if source is click.core.ParameterSource.ENVIRONMENT and param.envvar:
            raise click.BadParameter(f"{exc.message} (from {param.envvar})") from None
        raise


def _size_option(value: str) -> int:
    """``--max-body``: ``1048576``, ``20MiB``, ``512 KB`` (binary units: 1 KB = 1024)."""
    text = value.strip().lower()
    number = text.rstrip("kmgib ")
    unit = text[len(number) :].strip()
    try:
        size = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise click.BadParameter(
            f"{value!r} is not a size: give bytes, or a number with KiB, MiB or GiB"
        ) from None
    if not 1024 <= size <= 16 * 1024**3:
        raise click.BadParameter(f"{value!r} is not between 1 KiB and 16 GiB")
    return int(size)


def _header_option(value: str | None) -> str | None:
    """``--user-header`` checked as the dashboard checks it (None: WFE_UI_USER_HEADER)."""
    if value is None or not value.strip():
        return value
    from .security import header_name

    try:
        return header_name(value, "the header")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
