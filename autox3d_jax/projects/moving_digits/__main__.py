"""`python -m autox3d_jax.projects.moving_digits`: build a moving_digits config (see `builder.main`)."""
import sys

from autox3d_jax.projects.moving_digits import builder

sys.exit(builder.main())
