"""The link-check workload, run by a peer as `python -m workloads.linkcheck`.

Modules: `check` (the per-URL state machine), `extract` (links out of HTML), `urls` (canonical
URLs), `payload` (unit and result payloads) and `__main__` (the asyncio shell over the process
API). Nothing is imported here, so that starting the workload loads only what it uses.
"""
