"""The demo's code location: its defs folder (stream_assets/defs/), as `dg` loads a project.

The folder holds the StreamingTablesComponent's defs.yaml that names the demo's tables
(tables/catalog.py) and user_dimension (demo_assets.py). Loaded from the package itself rather
than through pyproject.toml (`dg.load_from_defs_folder`), so an installed package without the
source tree, as in the Docker image, loads the same definitions.
"""

import warnings
from pathlib import Path

import dagster as dg

from stream_assets import defs as defs_folder

with warnings.catch_warnings():
    # Dagster's own component loading uses its beta and preview APIs (code references, module
    # loaders): nothing a user of the demo can act on.
    warnings.simplefilter("ignore", dg.BetaWarning)
    warnings.simplefilter("ignore", dg.PreviewWarning)
    defs = dg.ComponentTree.from_module(
        defs_module=defs_folder, project_root=Path(__file__).resolve().parents[1]
    ).build_defs()
