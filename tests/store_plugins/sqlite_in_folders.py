"""A store plugin for the tests that serves sqlite:///abs/file.db with a folder
store at file.db.d, taking the scheme over from wfcore's SQLite store (the plugin
registered last wins)."""

from dirstore import DirStore

from wfcore import hookimpl


@hookimpl
def wfe_open_store(url):
    if url.startswith("sqlite://"):
        return DirStore(url, url[len("sqlite://") :] + ".d")
    return None
