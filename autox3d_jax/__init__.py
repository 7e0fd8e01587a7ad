"""autox3d_jax: search efficient 3D video networks (AutoX3D and the methods it builds on) in JAX/Flax."""
__version__ = "0.1.0"
