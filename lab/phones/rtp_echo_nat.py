#!/usr/bin/env python3
"""A far end's RTP that does not come from where its SDP says, as behind a NAT: it is
bound to PORT, while the SIP side (e.g. sipp's uas_answer_wrong_media_port.xml) names
another port in its SDP. It sends a silent PCMU packet every 100 ms to each even port of
FIRST..LAST (the gateway's RTP range: one of them is the call's) until RTP comes back,
and echoes every packet it receives to where it came from. Stops after SECONDS.

   lab/phones/rtp_echo_nat.py PORT FIRST LAST SECONDS

A gateway doing symmetric RTP answers to PORT, and its caller hears itself; one that
keeps to the SDP sends elsewhere and nothing comes back. Prints how many packets it
echoed. Loopback only; only the standard library."""
import socket, struct, sys, time

port, first, last, seconds = (int(a) for a in sys.argv[1:5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
s.settimeout(0.1)
seq, ts, ssrc = 1, 0, 0x5EED1234
echoed = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    if echoed == 0:
        packet = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + b"\xff" * 160
        for p in range(first + first % 2, last + 1, 2):
            s.sendto(packet, ("127.0.0.1", p))
        seq, ts = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF
    try:
        data, source = s.recvfrom(2048)
    except socket.timeout:
        continue
    s.sendto(data, source)
    echoed += 1
print(f"echoed {echoed} packets")
