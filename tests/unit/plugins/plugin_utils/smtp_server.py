# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real SMTP server on 127.0.0.1 for the email channel's tests: aiosmtpd with STARTTLS (a self-signed certificate
made here) and AUTH PLAIN/LOGIN checked against one user, both required. It stands in for the operator's mail
submission server (port 587)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import email
import email.policy
import ipaddress
import os
import ssl
import subprocess
import threading

from ansible_collections.failsafe.deploy.tests.helpers import free_port
from ansible_collections.failsafe.deploy.tests.requires import require_module

try:
    # Imported once, when the test modules are collected: ansible-test units runs every test in a forked process,
    # where an import made in the test (by SmtpServer and make_certificate) would be made again by each of them.
    import aiosmtpd.controller  # noqa: F401  pylint: disable=unused-import
    import aiosmtpd.smtp  # noqa: F401  pylint: disable=unused-import
    import cryptography.x509  # noqa: F401  pylint: disable=unused-import
    import cryptography.hazmat.primitives.asymmetric.ec  # noqa: F401  pylint: disable=unused-import
    import cryptography.hazmat.primitives.serialization  # noqa: F401  pylint: disable=unused-import
except ImportError:
    pass  # SmtpServer ends each test that needs the missing one with the reason (tests/requires.py)

SMTP_USER = 'deploy-bot'
SMTP_PASSWORD = 'Sm7pPassw0rdNeverShown'


def make_certificate(directory):
    """(cert path, key path) of a self-signed certificate for 127.0.0.1 and localhost: ``cryptography`` when it
    is installed, else the ``openssl`` command."""
    cert, key = os.path.join(directory, 'smtp.crt'), os.path.join(directory, 'smtp.key')
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                        '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', key, '-out', cert,
                        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], check=True, capture_output=True)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName('localhost'),
                                                               x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(private, hashes.SHA256()))
    with open(cert, 'wb') as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key, 'wb') as handle:
        handle.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key


class SmtpServer:
    """aiosmtpd on 127.0.0.1 requiring STARTTLS and AUTH. ``messages``: what it accepted, each with the parsed
    message, the envelope, the user that authenticated and whether TLS was on; ``logins``: every AUTH attempt.

    ``tls=False``: a server without STARTTLS that takes AUTH in clear text (a badly set up relay), on ``hostname``
    (another loopback address stands in for a remote server)."""

    def __init__(self, directory, port=None, hostname='127.0.0.1', tls=True):
        # Imported here: a missing aiosmtpd ends each test that starts the server (tests/requires.py), not the
        # collection of every module that imports this one.
        aiosmtpd_controller = require_module('aiosmtpd.controller', 'aiosmtpd is missing (requirements-dev.txt)')
        aiosmtpd_smtp = require_module('aiosmtpd.smtp', 'aiosmtpd is missing (requirements-dev.txt)')
        self.cert, self.key = make_certificate(directory)
        self.messages = []
        self.logins = []
        self.lock = threading.Lock()
        server = self
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 (aiosmtpd API)
                with server.lock:
                    server.messages.append({
                        'message': email.message_from_bytes(envelope.original_content or envelope.content,
                                                            policy=email.policy.default),
                        'raw': envelope.original_content or envelope.content,
                        'mail_from': envelope.mail_from, 'rcpt_tos': list(envelope.rcpt_tos),
                        'user': getattr(session, 'auth_data', None),
                        'tls': session.ssl is not None})
                return '250 Message accepted for delivery'

        def authenticator(smtp, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
            password = auth_data.password.decode() if isinstance(auth_data.password, bytes) else auth_data.password
            ok = login == SMTP_USER and password == SMTP_PASSWORD
            with server.lock:
                server.logins.append((mechanism, login, ok, session.ssl is not None))
            return aiosmtpd_smtp.AuthResult(success=ok, handled=False, auth_data=login if ok else None)

        self.port = port or free_port(hostname)
        self.controller = aiosmtpd_controller.Controller(
            Handler(), hostname=hostname, port=self.port, tls_context=context if tls else None,
            require_starttls=tls, authenticator=authenticator, auth_required=True, auth_require_tls=tls)
        self.controller.start()

    def close(self):
        self.controller.stop()
