"""What verl's ``verl.plugins`` entry point loads: importing it registers the ``tokenshape``
reward manager.

verl loads entry points when it is imported and logs a plugin that fails only at debug level; a
failure here is logged as a warning as well, so that ``Unknown reward manager: tokenshape`` comes
with its reason.
"""

import logging

try:
    from tokenshape.integrations.verl import TokenShapeRewardManager  # noqa: F401
except Exception as error:
    logging.getLogger(__name__).warning(
        "tokenshape's verl reward manager is not registered: %s", error
    )
    raise
