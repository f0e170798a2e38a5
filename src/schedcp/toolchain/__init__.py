# SPDX-License-Identifier: Apache-2.0
"""Turning scheduler sources into loadable objects: headers, clang builds, tunables, statistics."""
