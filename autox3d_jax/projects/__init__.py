"""Projects: datasets and configs built on top of the library, as plug-ins.

A project is a self-contained plug-in -- a dataset generator with its configs, say -- that uses the
library (clip records, the tf.data pipeline, the search and training loops) but is not part of
it. The library never imports a project by its module path; it reaches one only through the
plug-in table `autox3d_jax.data.registry.DATASET_PLUGINS` (dataset-name prefix -> module), loaded
with importlib when a dataset of that name is resolved or has to be built.

A dataset plug-in module exposes

  CONFIGS          mapping of the config names it can build (``<prefix>/<config>`` dataset names)
  DEFAULT_CONFIG   the config a bare ``<prefix>`` means
  build(config_name: str, data_dir: str | None) -> None
                   generate and prepare ``<prefix>/<config>`` as a tfds dataset under data_dir
                   (``data_dir/<prefix>/<config>/<version>``); a no-op when it is already there

and runs as ``python -m <module> --config CONFIG --data_dir DIR`` (the command the registry's
"not built" errors name).

Projects:

  moving_digits    the embedded offline demo dataset: handwritten digits in motion
"""
