"""Code shared by tap-closum, target-closum and the sandbox.

- :mod:`closum_api.registry`: the resources of both API revisions.
- :mod:`closum_api.schemas`: loading and validating the JSON Schemas in ``schemas/``.
- :mod:`closum_api.connection`: where an account is and how patiently to talk to it.
- :mod:`closum_api.config`: the settings the tap and the target share.
- :mod:`closum_api.throttle`: the pause every worker honours after a 429.
- :mod:`closum_api.auth`: the bearer-token authenticator.
- :mod:`closum_api.errors`: decoding responses and classifying failures.
- :mod:`closum_api.client`: a small retrying client for writes (used by the target).
"""

from importlib import metadata as _metadata

#: the distribution that ships the tap, the target and the sandbox
DISTRIBUTION = "closum-singer"
try:
    __version__ = _metadata.version(DISTRIBUTION)
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
