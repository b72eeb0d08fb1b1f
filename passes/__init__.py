"""Graph -> Graph passes. Importing this package registers every pass in `passes.base.PASSES`."""
from passes import canonicalize, recognize  # noqa: F401  (registration)
from passes.base import PASSES, PassContext, run_pipeline

__all__ = ["PASSES", "PassContext", "run_pipeline"]
