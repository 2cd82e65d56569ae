"""An app whose plugins report what they do when a worker starts (wfe_report_header)."""

from wfcore import ECSWorkflowEngine, hookimpl


class Topics:
    @hookimpl
    def wfe_report_header(self, engine):
        return [f"topics: consuming in.tasks for {engine.max_concurrency} tasks at once"]


class Model:
    @hookimpl
    def wfe_report_header(self):
        return "agents: model tiny-1"


class Broken:
    @hookimpl
    def wfe_report_header(self, engine):
        raise RuntimeError("settings unreadable")


class Silent:
    @hookimpl
    def wfe_report_header(self, engine):
        return None


engine = ECSWorkflowEngine(load_plugins=False, plugins=[Topics(), Model(), Broken(), Silent()])
