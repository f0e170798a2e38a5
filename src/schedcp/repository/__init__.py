# SPDX-License-Identifier: Apache-2.0
"""Scheduler Policy Repository: stored policies, semantic search, results history, promotion.

Use ``RepositoryService`` (service.py); the store, search and embedding modules are its parts.
The import is lazy so that `schedcp --help` does not pay for numpy and the model code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RepositoryService"]


def __getattr__(name: str) -> Any:
    if name == "RepositoryService":
        from schedcp.repository.service import RepositoryService

        return RepositoryService
    raise AttributeError(name)
