#!/usr/bin/env python3
"""Holds VIP addresses on a TUN device it owns, as nf-maglev's announcer does, without nf-maglev.

Creates the non-persistent TUN device NAME (TUNSETIFF, IFF_TUN | IFF_NO_PI), sets it up, adds every
--addr (/32 or /128) and keeps the file descriptor open until it is signalled. The device, and with it
every address, lives exactly as long as the descriptor: SIGKILL withdraws as surely as a clean exit.
Prints {"ev": "ready", "dev": NAME} once the addresses are on the device.
"""
import argparse
import fcntl
import json
import os
import signal
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", default="nfmvip0")
    p.add_argument("--addr", action="append", default=[])
    a = p.parse_args()
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", a.dev.encode(), IFF_TUN | IFF_NO_PI))
    subprocess.run(["ip", "link", "set", "dev", a.dev, "up"], check=True)
    for addr in a.addr:
        if ":" in addr:
            cmd = ["ip", "-6", "addr", "add", addr + "/128", "dev", a.dev, "nodad"]
        else:
            cmd = ["ip", "addr", "add", addr + "/32", "dev", a.dev]
        subprocess.run(cmd, check=True)
    sys.stdout.write(json.dumps({"ev": "ready", "dev": a.dev}) + "\n")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
