# SPDX-License-Identifier: Apache-2.0
"""SchedCP's MCP server: the control plane's API for AI agents (stdio and streamable HTTP).

``app.build_server`` assembles tools, resources and subscriptions; ``http`` adds bearer-token auth
for the HTTP transport; ``clientconfig`` prints ready-to-paste client configuration.
"""
