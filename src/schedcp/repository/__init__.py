"""Scheduler Policy Repository: stored policies, semantic search, results history, promotion.

Use ``RepositoryService`` (service.py); the store, search and embedding modules are its parts.
"""

from schedcp.repository.service import RepositoryService

__all__ = ["RepositoryService"]
