"""Video input for search, training and evaluation: clip records, tf.data pipeline, datasets.

Modules (import what you need; this package imports nothing heavy on its own):

* `records`      -- clip record format: TFRecord shards of `tf.train.SequenceExample` (JPEG frames,
                    label, video id, fps, dataset metadata) + `dataset_info.json`; writer and parser.
* `convert`      -- video folder / CSV -> clip records with PyAV; CLI `python -m autox3d_jax.data.convert`.
* `registry`     -- dataset name -> files, parser and label facts; the clear "what is missing" errors;
                    the dataset plug-in table (`DATASET_PLUGINS`, `builder_for`) through which generated
                    datasets such as the embedded `moving_digits` (`autox3d_jax.projects.moving_digits`)
                    are found and built.
* `pipeline`     -- `make_train_pipeline`, `make_eval_pipeline` (X3D multi-view), `pipeline_from_config`,
                    `to_global_batch`.
* `parallel`, `testing` -- process-parallel ordered map; tiny fixtures for tests.
"""
