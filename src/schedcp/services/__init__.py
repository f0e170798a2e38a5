# SPDX-License-Identifier: Apache-2.0
"""SchedCP's operations, declared once with typed inputs and outputs (see ``operation.py``).

The MCP server registers them as tools, the CLI calls them directly, and sched-agent reaches them
only through MCP, exactly as any outside agent does.
"""
