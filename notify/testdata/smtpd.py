"""A local SMTP server for notify's tests: aiosmtpd with STARTTLS required
and AUTH PLAIN/LOGIN against one user. Each message received is written to
OUTDIR as N.eml. Prints "ready PORT" once listening; stops on SIGTERM.

usage: smtpd.py HOST PORT CERTFILE KEYFILE OUTDIR USER PASSWORD
"""
import asyncio
import itertools
import os
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    host, port, cert, key, outdir, user, password = sys.argv[1:8]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    seq = itertools.count(1)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            n = next(seq)
            tmp = os.path.join(outdir, f".{n}.tmp")
            with open(tmp, "wb") as f:
                f.write(envelope.content)
            os.rename(tmp, os.path.join(outdir, f"{n}.eml"))
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        return AuthResult(success=ok)

    ctl = Controller(Handler(), hostname=host, port=int(port), tls_context=ctx,
                     require_starttls=True, auth_required=True,
                     auth_require_tls=True, authenticator=authenticate)
    ctl.start()
    print(f"ready {ctl.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.run_until_complete(stop.wait())
    ctl.stop()


if __name__ == "__main__":
    main()
