"""rlrun's Hydra config tree (installed with the package). Importing it registers the schemas."""

from rlrun.config import register_schemas

register_schemas()
