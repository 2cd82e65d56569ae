"""The store contract's tests: what the store says of itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ._support import (
    _ContractBase,
    _with_store,
)


class _Itself(_ContractBase):
    @_with_store
    async def test_durable_is_what_the_store_class_says(self, store: Any) -> None:
        """The store class's ``durable`` is the contract's: set in two places, they
        can disagree, and wfe_kafka trusts the store's (it commits offsets only for
        a durable store) while the contract tests what this class claims."""
        said, claimed = bool(type(store).durable), bool(self.durable)
        if said != claimed:
            pytest.fail(
                f"{type(store).__name__}.durable is {said}, but {type(self).__name__}.durable "
                f"is {claimed}: set both to True if the store's tasks outlive closing and "
                "reopening it, or both to False if they do not (a subclass of MemoryStore "
                "inherits durable = False)",
                pytrace=False,
            )

    @_with_store
    async def test_the_artifacts_folder_is_an_absolute_path(self, store: Any) -> None:
        """artifacts_dir is set once the store is open, to an absolute path: the engine
        keeps each task's artifact files under it, and every process (a worker, ``wfe
        show``, started in other folders) must find them there."""
        folder = getattr(store, "artifacts_dir", None)
        assert isinstance(folder, Path), (
            f"{type(store).__name__}.artifacts_dir is {folder!r}, not a pathlib.Path: set "
            "it, in __init__ or by the end of open(), to the folder under which the engine "
            "keeps each task's artifact files"
        )
        assert folder.is_absolute(), (
            f"{type(store).__name__}.artifacts_dir is {str(folder)!r}, a relative path: a "
            "process started in another folder would look for the files elsewhere; make "
            "it absolute (Path(...).absolute()), derived from the URL"
        )
