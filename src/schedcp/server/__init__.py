# SPDX-License-Identifier: Apache-2.0
"""SchedCP's MCP server: the service layer's operations as an API for AI agents (stdio and streamable HTTP).

This package is the MCP face only: the operations, their state and their checks live in
``schedcp.services``, which imports nothing from here. ``app.build_server`` registers every operation
as a tool and adds resources and subscriptions; ``http`` adds bearer-token auth for the HTTP
transport; ``clientconfig`` prints ready-to-paste client configuration.
"""
