"""rlrun's Hydra launcher plugin: ``hydra/launcher=population`` (see :mod:`.population_launcher`)."""
