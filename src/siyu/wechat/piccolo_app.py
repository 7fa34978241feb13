from piccolo.conf.apps import AppConfig

from siyu.core.settings import REPO_ROOT
from siyu.wechat import tables

APP_CONFIG = AppConfig(
    app_name="wechat",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "wechat"),
    table_classes=[tables.InboundEvent, tables.KfCursor, tables.AutoReply, tables.ReplyWindow, tables.Outbound,
                   tables.SubscribeConsent, tables.ConsentGrant, tables.HeldJob, tables.Media],
    migration_dependencies=["siyu.tenants.piccolo_app"],
)
