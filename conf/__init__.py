# Makes the configs importable as transferlab.conf, which is how Hydra finds them in an installed package.
