"""An app whose config_from_object() names a module that does not exist (read lazily)."""

from celery import Celery

app = Celery("missing_config_app")
app.config_from_object("celeryconfig_that_is_not_deployed")
