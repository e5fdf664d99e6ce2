"""A loopback SMTP server for the mail tests.

Usage: smtp_sink.py PORT. Prints `ready` once it accepts connections, then one JSON line per
message received: {"from": ..., "to": [...], "data": "<the raw message>"}.
"""

import json
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server, session, envelope):
        line = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        print(json.dumps(line), flush=True)
        return "250 OK"


def main():
    port = int(sys.argv[1])
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
