"""The `osaas` command's groups, one module each: its arguments (`add_commands`) and what it does.
Heavy imports (the coordinator, libtorrent, pygame) wait inside the command that needs them."""
