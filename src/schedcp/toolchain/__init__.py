"""Turning scheduler sources into loadable objects: headers, clang builds, tunables, statistics."""
