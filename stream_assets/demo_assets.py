"""The demo's assets beside its streaming tables: user_dimension, seeded with the demo users.

Named by the demo's defs.yaml (stream_assets/defs/streaming_tables/defs.yaml) as the assets its
tables read; tables/dimensions.py takes the users as a parameter so only this module (and not
the table model) depends on the demo's tooling in dev/.
"""

from stream_assets.dev.users import demo_users
from stream_assets.tables.dimensions import build_user_dimension

user_dimension = build_user_dimension(demo_users)
