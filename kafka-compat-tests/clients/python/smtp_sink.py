"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives.

usage: smtp_sink.py PORT MAILDIR
PORT 0 lets the kernel pick. Prints "READY <port>" once it accepts connections, then
writes every mail it takes to MAILDIR/<n>.json (envelope sender, recipients, the message
text). Runs until killed.
"""

import asyncio
import json
import os
import sys

from aiosmtpd.smtp import SMTP


class Keep:
    def __init__(self, maildir):
        self.maildir = maildir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        mail = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "text": envelope.content.decode("utf-8", "replace"),
        }
        path = os.path.join(self.maildir, f"{self.count}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(mail, f)
        os.rename(path + ".tmp", path)
        return "250 OK"


async def main():
    port, maildir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(maildir, exist_ok=True)
    handler = Keep(maildir)
    # Continue numbering after what an earlier run of the sink left in the directory.
    handler.count = len([n for n in os.listdir(maildir) if n.endswith(".json")])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", port)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
