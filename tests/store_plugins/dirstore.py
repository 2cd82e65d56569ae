"""A third-party store plugin for the tests: a store in a folder of its own, its
tasks in a SQLite file inside, written against the Store base class. Installed with
an entry point by the tests that use it (never imported by wfcore itself):

    dirstore:///abs/folder   says whether it exists (Store.exists)
    olddir:///abs/folder     written before exists() was there: cannot tell
    brokendir:///abs/folder  whose exists() cannot reach its storage
    plaindir:///abs/folder   whose exists() is a plain method
    faultydir:///abs/folder  whose close() fails, as a last flush to a full disk would
"""

from pathlib import Path

from wfcore import hookimpl
from wfcore.stores.base import Store
from wfcore.stores.sqlite import SQLiteStore


class OldDirStore(Store):
    def __init__(self, url, folder):
        self.url = url
        self.folder = Path(folder)
        self.artifacts_dir = self.folder / "artifacts"
        self._tasks = SQLiteStore(self.folder / "tasks.db")

    async def open(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        await self._tasks.open()


def _forwarded(name):
    async def method(self, *args, **kwargs):
        return await getattr(self._tasks, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in sorted(Store.__abstractmethods__ - {"open"}):
    setattr(OldDirStore, _name, _forwarded(_name))
OldDirStore.__abstractmethods__ = frozenset()


class DirStore(OldDirStore):
    async def exists(self):
        return self.folder.is_dir()


class BrokenDirStore(OldDirStore):
    async def exists(self):
        raise OSError("the file server does not answer")


class PlainDirStore(OldDirStore):
    def exists(self):
        return self.folder.is_dir()


class FaultyDirStore(DirStore):
    async def close(self):
        await self._tasks.close()
        raise OSError(28, "No space left on device")


STORES = {
    "dirstore": DirStore,
    "olddir": OldDirStore,
    "brokendir": BrokenDirStore,
    "plaindir": PlainDirStore,
    "faultydir": FaultyDirStore,
}


@hookimpl
def wfe_open_store(url):
    scheme, _, rest = url.partition("://")
    # A user and password before the folder, as a database server's URL has them,
    # are taken and ignored.
    folder = rest.rpartition("@")[2]
    return STORES[scheme](url, folder) if scheme in STORES else None
