"""An app for the CLI tests: a plugin that refuses the start of any worker."""

from wfcore import ECSWorkflowEngine, Phase, PluginError, hookimpl


class Misconfigured:
    @hookimpl
    def wfe_engine_started(self) -> None:
        raise PluginError("WFE_EXAMPLE_URL is not a URL")


engine = ECSWorkflowEngine(plugins=[Misconfigured()])
engine.register_workflow("w", [Phase("a")])
