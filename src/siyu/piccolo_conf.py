"""Piccolo's configuration module (PICCOLO_CONF=siyu.piccolo_conf): the engine and the app registry."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from siyu.core.embedded import database_url

# extensions=(): Piccolo would otherwise try CREATE EXTENSION "uuid-ossp", which needs a superuser.
DB = PostgresEngine(config={"dsn": database_url()}, extensions=())

APP_REGISTRY = AppRegistry(apps=["siyu.tenants.piccolo_app", "siyu.contacts.piccolo_app", "siyu.timeline.piccolo_app",
                                 "siyu.wechat.piccolo_app", "siyu.segments.piccolo_app",
                                 "siyu.inbox.piccolo_app", "siyu.commerce.piccolo_app",
                                 "siyu.engagement.piccolo_app"])
