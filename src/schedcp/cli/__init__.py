# SPDX-License-Identifier: Apache-2.0
"""The `schedcp` command line. Each service registers its commands from its own module."""
