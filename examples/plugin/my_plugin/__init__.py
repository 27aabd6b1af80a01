"""An example of a user's own lstsd components: a dataset (``data.py``), a model (``models.py``) and a method
(``methods.py``), each registered by its decorator; ``components.py`` imports the three (the module that
``imports=[my_plugin.components]`` names); ``conf/`` holds their YAML options. See docs/extending.md."""
