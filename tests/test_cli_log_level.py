"""--log-level given where wfe does not take it, or WFE_LOG_LEVEL set wrong, is
named as such."""

from __future__ import annotations


def test_log_level_after_the_command_says_where_it_goes(wfe) -> None:
    for option in (("--log-level", "debug"), ("--log-level=debug",)):
        result = wfe("tasks", *option, check=False)
        assert result.returncode == 2
        assert result.stderr.endswith(
            "Error: No such option '--log-level': it goes before the command name (wfe "
            "--log-level LEVEL tasks ...), or set WFE_LOG_LEVEL\n"
        ), result.stderr


def test_a_wrong_log_level_from_the_environment_names_the_variable(wfe) -> None:
    result = wfe("tasks", check=False, env=dict(wfe.env, WFE_LOG_LEVEL="verbose"))
    assert result.returncode == 2
    assert result.stderr.endswith(
        "Error: Invalid value for WFE_LOG_LEVEL (--log-level): 'verbose' is not one of "
        "'debug', 'info', 'warning', 'error'\n"
    ), result.stderr
    given = wfe("--log-level", "loud", "tasks", check=False)
    assert given.returncode == 2
    assert given.stderr.endswith(
        "Error: Invalid value for '--log-level': 'loud' is not one of 'debug', 'info', "
        "'warning', 'error'\n"
    )
    # Any case, from either.
    assert wfe("--log-level", "Warning", "plugins").returncode == 0
    assert wfe("plugins", env=dict(wfe.env, WFE_LOG_LEVEL="eRRoR")).returncode == 0
