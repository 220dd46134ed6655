"""The one error tree: every error that means "the input or the other side is wrong" (not a bug
of ours) derives from `OsaasError`, which says what it becomes at each edge: an HTTP status and
error code at the coordinator's API (coordinator/api.py, one `except`), an exit code and one
line at the command line (osaas/cli.py, one `except`).

    OsaasError                          exit 2; HTTP 400 bad_request unless a kind says otherwise
    ├── overlay      WireError (400; 401 for a missing, bad, misaddressed or replayed
    │                signature), Unavailable (503), Rejected, IdentityError, RecordError
    │                (StoreRefused), CertificateError, TorrentError (TorrentTimeout,
    │                SessionClosed)
    ├── workloads    BundleError and ModelError (400 invalid_bundle: a bundle, its job model);
    │                SchemaError (a reported record that breaks its job's schema: the report
    │                is refused), UnknownFormat (a format a workload has no renderer for)
    ├── coordinator  StoreError: InvalidInput (400), UnknownPeer (403), UnknownOwner (403),
    │                NotOwner (403), NotFound (404), StaleLease (409), Conflict (409),
    │                StoreUnavailable (503 with Retry-After); Busy (429), RateLimited (429
    │                with Retry-After)
    ├── peer         BudgetError, WorkChoiceError, TrustError, SandboxError, IdleError;
    │                the peer's own trouble with one unit, which gives it back (unable):
    │                FetchFailed (a BundleError), Untrusted, SandboxFailed
    ├── osaas        CheckError, UsageError
    └── screensaver  ScreensaverError, InstallError

Outside the tree on purpose: `workloads.process_api.ProtocolError` and the link checker's own
errors, which ship inside the bundle a sandbox runs and so import nothing of ours; the peer
turns them into a failed unit. Anything else that escapes is a bug: a traceback in tests, a
logged 500 at the coordinator.
"""

from __future__ import annotations


class OsaasError(Exception):
    """Bad input or a misbehaving other side, said in one line a person can act on."""

    http_status: int = 400
    code: str = "bad_request"
    exit_code: int = 2
    retry_after: float | None = None  # seconds to wait before asking again: the API's Retry-After
