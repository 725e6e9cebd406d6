"""SMTP sink for bench/scale.sh: keeps every email it accepts as one file in
a spool folder (written under a temporary name, then renamed, so readers
never see half a file). Usage: python3 scale_sink.py HOST PORT SPOOL"""
import asyncio
import itertools
import os
import sys

from aiosmtpd.controller import Controller

counter = itertools.count()


class Spool:
    def __init__(self, folder):
        self.folder = folder

    async def handle_DATA(self, server, session, envelope):
        n = next(counter)
        tmp = os.path.join(self.folder, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.folder, f"{n:08d}.eml"))
        return "250 OK"


def main():
    host, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(folder, exist_ok=True)
    controller = Controller(Spool(folder), hostname=host, port=port)
    controller.start()
    try:
        asyncio.new_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
