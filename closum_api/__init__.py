"""Code shared by tap-closum, target-closum and the sandbox.

- :mod:`closum_api.registry`: the resources of both API revisions.
- :mod:`closum_api.schemas`: loading and validating the JSON Schemas in ``schemas/``.
- :mod:`closum_api.connection`: where an account is and how patiently to talk to it.
- :mod:`closum_api.config`: the settings the tap and the target share.
- :mod:`closum_api.stop`: the stop event of a run, which its signal handler sets; every wait of the run ends on it.
- :mod:`closum_api.pace`: the request rate of the run (fixed or adaptive).
- :mod:`closum_api.retry`: one retry budget per operation.
- :mod:`closum_api.auth`: the bearer-token authenticator.
- :mod:`closum_api.errors`: decoding responses and classifying failures.
- :mod:`closum_api.client`: the client: session, token, pace, retries (the tap reads through its parts).
"""

from importlib import metadata as _metadata

#: the distribution that ships the tap, the target and the sandbox
DISTRIBUTION = "closum-singer"
try:
    __version__ = _metadata.version(DISTRIBUTION)
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
