"""Create OpenTAKServer users and issue each a client certificate (CN = user name) with OTS's own CA.

Runs inside the interop root file system with OpenTAKServer's virtualenv and environment, after the
OTS API process has migrated the database and created its CA (see in-namespace.sh). Usage:
``python provision.py USER...``. Certificates land where OTS puts those it issues:
``<OTS_CA_FOLDER>/certs/<user>/<user>.pem`` and ``<user>.nopass.key``. The users get a random
password nobody needs: they authenticate with their certificate. OTS creates an ``administrator``
with a well-known default password; it is replaced by ``$OTS_ADMIN_PASSWORD`` (the tests read the
API with it).
"""

from __future__ import annotations

import os
import secrets
import sys

import flask_wtf
import yaml
from flask import Flask
from flask_security import Security, SQLAlchemyUserDatastore, hash_password
from flask_security.models import fsqla
from opentakserver.certificate_authority import CertificateAuthority
from opentakserver.defaultconfig import DefaultConfig
from opentakserver.EmailValidator import EmailValidator

# Imported for its side effect: it imports every model, which SQLAlchemy needs to map User.
from opentakserver.eud_handler import EudHandler  # noqa: F401
from opentakserver.extensions import db, logger
from opentakserver.PasswordValidator import PasswordValidator


def main(users: list[str]) -> int:
    app = Flask("interop-provision")
    app.config.from_object(DefaultConfig)
    app.config.from_file(
        os.path.join(app.config["OTS_DATA_FOLDER"], "config.yml"), load=yaml.safe_load
    )
    db.init_app(app)
    fsqla.FsModels.set_db_info(db)
    from opentakserver.models.role import Role
    from opentakserver.models.user import User

    flask_wtf.CSRFProtect(app)  # Flask-Security refuses to start without it (OTS config)
    datastore = SQLAlchemyUserDatastore(db, User, Role)
    app.security = Security(
        app, datastore, mail_util_cls=EmailValidator, password_util_cls=PasswordValidator
    )
    ca = CertificateAuthority(logger, app)
    with app.app_context():
        admin = datastore.find_user(username="administrator")
        if admin is not None and os.environ.get("OTS_ADMIN_PASSWORD"):
            admin.password = hash_password(os.environ["OTS_ADMIN_PASSWORD"])
            db.session.commit()
        for name in users:
            if datastore.find_user(username=name) is None:
                datastore.create_user(
                    username=name,
                    password=hash_password(secrets.token_urlsafe(24)),
                    roles=["user"],
                )
                db.session.commit()
            # OTS also writes a data package naming the server as the request's host did.
            with app.test_request_context(base_url="https://opentakserver:8443/"):
                ca.issue_certificate(name)
            print(f"user {name}: certificate issued")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
