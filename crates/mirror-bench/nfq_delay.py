"""Holds every packet of one NFQUEUE queue for a fixed time, then accepts it.

netem's delay without netem (this kernel has none): iptables sends packets to
the queue (`-j NFQUEUE --queue-num N`), this program keeps each one for DELAY_MS
and gives its verdict then. The delay is the same for every packet, so a FIFO
keeps them in order. Prints "ready" once bound; exits when stdin closes (the
caller's lifeline) or on SIGTERM.

Usage: python3 nfq_delay.py QUEUE_NUM DELAY_MS
Needs PyPI NetfilterQueue (libnetfilter-queue-dev to build it) and root.
"""

import collections
import select
import sys
import time

from netfilterqueue import COPY_META, NetfilterQueue


def main() -> None:
    queue_num = int(sys.argv[1])
    delay = float(sys.argv[2]) / 1000.0
    clock = time.monotonic
    held: collections.deque = collections.deque()

    def hold(packet) -> None:
        held.append((clock() + delay, packet))

    nfq = NetfilterQueue()
    # Metadata only: the verdict needs no payload. Room for far more packets
    # than a 200 Mbit/s link has in flight during the delay.
    nfq.bind(queue_num, hold, max_len=16384, mode=COPY_META, sock_len=16 * 1024 * 1024)
    fd = nfq.get_fd()
    poller = select.epoll()
    poller.register(fd, select.EPOLLIN)
    poller.register(sys.stdin.fileno(), select.EPOLLIN | select.EPOLLHUP)
    print("ready", flush=True)
    while True:
        now = clock()
        while held and held[0][0] <= now:
            held.popleft()[1].accept()
        timeout = held[0][0] - now if held else -1
        for ready_fd, _events in poller.poll(timeout):
            if ready_fd == fd:
                nfq.run(block=False)
            elif not sys.stdin.buffer.read1(4096):
                return


if __name__ == "__main__":
    main()
