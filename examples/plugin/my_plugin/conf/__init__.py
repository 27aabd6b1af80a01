"""The YAML options of my_plugin (a package, so that hydra.searchpath=[pkg://my_plugin/conf] finds it)."""
