#!/usr/bin/env python3
"""Traffic for the end-to-end lab tests (test/e2e-*.test.ts), run inside a VM's namespace.

Every command prints one JSON object on stdout and bounds itself in time.

  tcp-sink PORT SECONDS [--echo]     accept one connection, count (and echo) bytes until EOF
  tcp-send HOST PORT NBYTES [--echo] [--mbps=N] [--timeout=S]
                                     send NBYTES of a fixed pattern (paced at N Mbit/s if asked),
                                     read the echo if asked; reports the kernel's retransmissions;
                                     S (default 20) bounds the whole send (Python's sendall)
  tcp-connect HOST PORT SECONDS      try to open a connection; says whether it opened
  udp-recv PORT SECONDS [COUNT]      collect datagrams (unconnected socket: no ICMP back)
  udp-send HOST PORT COUNT           send COUNT numbered datagrams
  forge IFACE DST_MAC SRC_MAC SRC6 DST6 DPORT COUNT
                                     COUNT hand-made Ethernet/IPv6/UDP frames on IFACE
  fuzz IFACE DST_MAC SRC_MAC SRC6 SEED COUNT DST6...
                                     COUNT random malformed frames on IFACE (see fuzz_frame)
  stamp-send HOST PORT               a datagram per number read on stdin, stamped with its send time
  stamp-recv PORT SECONDS            each datagram's one-way time (kernel receive stamp - send stamp)
  probe HOST PORT INTERVAL_MS SECONDS
                                     numbered UDP datagrams every INTERVAL_MS for SECONDS
  probe-log PORT SECONDS             receive them; report the gaps: every silence longer than
                                     5 ms, with when it started (wall clock, ms since 1970); the
                                     numbers missing below the highest received (the first 50),
                                     and how many came twice
  spray IFACE DST_MAC SRC_MAC SRC6 PREFIX64 RATE SECONDS SEED
                                     well-formed UDP frames to random identities of PREFIX64
                                     (e.g. fd9a:3c7e:51b2:1::), RATE a second for SECONDS
"""

import hashlib
import json
import random
import socket
import struct
import sys
import time

CHUNK = 65536
SO_MAX_PACING_RATE = 47  # asm-generic/socket.h


def pattern(n):
    """n bytes of a fixed, non-repeating-per-KB pattern (so a lost or reordered chunk shows in the hash)."""
    out = bytearray()
    k = 0
    while len(out) < n:
        out += hashlib.sha256(k.to_bytes(8, 'big')).digest()
        k += 1
    return bytes(out[:n])


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def tcp_sink(port, seconds, echo):
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(('::', port))
    srv.listen(1)
    srv.settimeout(seconds)
    emit({'listening': port})
    try:
        conn, peer = srv.accept()
    except socket.timeout:
        emit({'accepted': False, 'bytes': 0})
        return
    conn.settimeout(seconds)
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            data = conn.recv(CHUNK)
            if not data:
                break
            n += len(data)
            h.update(data)
            if echo:
                conn.sendall(data)
    except socket.timeout:
        emit({'accepted': True, 'peer': peer[0], 'bytes': n, 'sha256': h.hexdigest(), 'timeout': True})
        return
    info = tcp_info(conn)
    conn.shutdown(socket.SHUT_WR)
    conn.close()
    emit(dict({'accepted': True, 'peer': peer[0], 'bytes': n, 'sha256': h.hexdigest()}, **info))


# struct tcp_info (include/uapi/linux/tcp.h): 8 bytes of u8 fields, then u32 and u64 fields.
TCPI_TOTAL_RETRANS = 100
TCPI_DSACK_DUPS = 216
TCPI_REORD_SEEN = 220
TCPI_RCV_OOOPACK = 224
TCPI_LEN = 228


def tcp_info(s):
    """The counters of the connection that tell lost, spurious and reordered segments apart."""
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCPI_LEN)
    if len(info) < TCPI_LEN:
        raise SystemExit('tcp_info is %d bytes: this kernel is older than 5.4' % len(info))
    u32 = lambda off: struct.unpack_from('I', info, off)[0]
    return {'retransmissions': u32(TCPI_TOTAL_RETRANS), 'dsackDups': u32(TCPI_DSACK_DUPS),
            'reorderSeen': u32(TCPI_REORD_SEEN), 'outOfOrderIn': u32(TCPI_RCV_OOOPACK)}


def tcp_send(host, port, nbytes, echo, mbps=None, timeout=20):
    data = pattern(nbytes)
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(timeout)
    t0 = time.monotonic()
    echoed = 0
    eh = hashlib.sha256()
    if echo:
        # Send and read back in turns, so neither side's buffers fill up.
        for off in range(0, nbytes, CHUNK):
            part = data[off:off + CHUNK]
            s.sendall(part)
            got = 0
            while got < len(part):
                r = s.recv(CHUNK)
                if not r:
                    break
                got += len(r)
                eh.update(r)
            echoed += got
        s.shutdown(socket.SHUT_WR)
        while True:
            r = s.recv(CHUNK)
            if not r:
                break
            echoed += len(r)
            eh.update(r)
    elif mbps:
        # Kernel pacing (TCP's internal pacing, or fq's): the socket never runs dry and idles,
        # which user-space pacing would do, making tail loss probes fire (spurious retransmissions).
        s.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, int(mbps * 1e6 / 8))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(CHUNK):
            pass
    else:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(CHUNK):
            pass
    # The peer closed after reading everything: all data is acknowledged, the counts are final.
    info = tcp_info(s)
    s.close()
    emit(dict({'sent': nbytes, 'sha256': hashlib.sha256(data).hexdigest(), 'echoed': echoed, 'echoSha256': eh.hexdigest() if echo else None,
               'seconds': round(time.monotonic() - t0, 3)}, **info))


def tcp_connect(host, port, seconds):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(seconds)
    t0 = time.monotonic()
    try:
        s.connect((host, port))
        emit({'connected': True, 'seconds': round(time.monotonic() - t0, 3)})
    except OSError as e:
        emit({'connected': False, 'error': type(e).__name__ + ': ' + str(e), 'seconds': round(time.monotonic() - t0, 3)})
    finally:
        s.close()


def udp_recv(port, seconds, count):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(('::', port))
    emit({'listening': port})
    end = time.monotonic() + seconds
    got = []
    while time.monotonic() < end and (count is None or len(got) < count):
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            break
        got.append({'from': peer[0], 'data': data.decode('latin-1')})
    emit({'received': len(got), 'datagrams': got})


def udp_send(host, port, count):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sent = 0
    for k in range(count):
        s.sendto(('datagram %d' % k).encode(), (host, port))
        sent += 1
        time.sleep(0.01)
    emit({'sent': sent})


# ---- Hand-made frames ----------------------------------------------------------------------

def mac(text):
    return bytes(int(x, 16) for x in text.split(':'))


def ip6(text):
    return socket.inet_pton(socket.AF_INET6, text)


def csum(data):
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


def udp6_frame(dst_mac, src_mac, src6, dst6, sport, dport, payload):
    udp_len = 8 + len(payload)
    pseudo = src6 + dst6 + struct.pack('!IxxxB', udp_len, 17)
    udp = struct.pack('!HHHH', sport, dport, udp_len, 0) + payload
    c = csum(pseudo + udp) or 0xffff
    udp = udp[:6] + struct.pack('!H', c) + udp[8:]
    ip = struct.pack('!IHBB', 6 << 28, udp_len, 17, 64) + src6 + dst6
    return dst_mac + src_mac + b'\x86\xdd' + ip + udp


def raw_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    return s


def forge(iface, dst_mac, src_mac, src6, dst6, dport, count):
    s = raw_socket(iface)
    sent = 0
    for k in range(count):
        f = udp6_frame(mac(dst_mac), mac(src_mac), ip6(src6), ip6(dst6), 40000 + k, dport, b'forged %d' % k)
        sent += 1 if s.send(f) == len(f) else 0
        time.sleep(0.005)
    emit({'sent': sent})


def fuzz_frame(rnd, dst_mac, src_mac, src6, dsts, max_len):
    """One malformed frame. Kinds: random bytes; a valid Ethernet header (our MACs, IPv6)
    and garbage; a valid-looking IPv6 header (right source, one of `dsts`, random next
    header and payload length) and garbage; ICMPv6 ND/RA/redirect types with garbage."""
    kind = rnd.random()
    n = rnd.randint(0, max_len)
    if kind < 0.35:
        return kind, rnd.randbytes(n)
    eth = dst_mac + src_mac + b'\x86\xdd'
    if kind < 0.55:
        return kind, eth + rnd.randbytes(max(0, n - 14))
    body = rnd.randbytes(max(0, n - 54))
    nxt = rnd.choice([0, 6, 17, 43, 44, 58, 59, 60, rnd.randint(0, 255)])
    plen = len(body) if rnd.random() < 0.5 else rnd.randint(0, 0xffff)
    vtf = (6 << 28) | rnd.getrandbits(28) if rnd.random() < 0.9 else rnd.getrandbits(32)
    dst = rnd.choice(dsts)
    if kind >= 0.85:
        nxt = 58
        body = bytes([rnd.choice([133, 134, 135, 136, 137, 130, 131, 143]), rnd.randint(0, 3)]) + body[2:]
    hdr = struct.pack('!IHBB', vtf, plen, nxt, rnd.choice([255, 64, 1, 0])) + src6 + dst
    return kind, eth + hdr + body


def fuzz(iface, dst_mac, src_mac, src6, seed, count, dsts):
    rnd = random.Random(seed)
    s = raw_socket(iface)
    max_len = 14 + 1446
    sent = 0
    errors = {}
    t0 = time.monotonic()
    for k in range(count):
        _, f = fuzz_frame(rnd, mac(dst_mac), mac(src_mac), ip6(src6), [ip6(d) for d in dsts], max_len)
        try:
            s.send(f)
            sent += 1
        except OSError as e:
            errors[e.strerror] = errors.get(e.strerror, 0) + 1
            if e.errno in (105, 11):  # ENOBUFS, EAGAIN: the queue is full; give it a moment
                time.sleep(0.001)
    emit({'attempted': count, 'sent': sent, 'errors': errors, 'seconds': round(time.monotonic() - t0, 3)})


def probe(host, port, interval_ms, seconds):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        try:
            s.sendto(struct.pack('!Q', k), (host, port))
        except OSError:
            pass  # no route while the VM's interface is away: the datagram is lost, as on a wire
        k += 1
        due = t0 + k * interval_ms / 1000.0
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    emit({'sent': k})


def probe_log(port, seconds):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(('::', port))
    s.settimeout(0.2)
    emit({'listening': port})
    t_end = time.monotonic() + seconds
    last = None
    last_wall = 0.0
    got = 0
    gaps = []
    seen = set()
    while time.monotonic() < t_end:
        try:
            data, _ = s.recvfrom(64)
        except socket.timeout:
            continue
        now = time.monotonic()
        if last is not None and now - last > 0.005:
            gaps.append({'at': round(last_wall * 1000, 1), 'ms': round((now - last) * 1000, 2)})
        last = now
        last_wall = time.time()
        got += 1
        if len(data) >= 8:
            seen.add(struct.unpack('!Q', data[:8])[0])
    top = max(seen) if seen else -1
    missing = [k for k in range(top + 1) if k not in seen]
    emit({'received': got, 'gaps': gaps, 'missing': missing[:50], 'duplicates': got - len(seen)})


def spray(iface, dst_mac, src_mac, src6, prefix, rate, seconds, seed):
    rnd = random.Random(seed)
    s = raw_socket(iface)
    head = ip6(prefix)[:8]
    sent = 0
    dropped = 0
    t0 = time.monotonic()
    step = 1.0 / rate
    due = t0
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        if now < due:
            time.sleep(min(due - now, 0.01))
            continue
        # Catch up in bursts of up to 64 frames when behind schedule.
        for _ in range(min(64, int((now - due) / step) + 1)):
            f = udp6_frame(mac(dst_mac), mac(src_mac), ip6(src6), head + rnd.randbytes(8), 40000, 9, b'spray')
            try:
                s.send(f)
                sent += 1
            except OSError:
                dropped += 1
            due += step
    emit({'sent': sent, 'refusedByKernel': dropped, 'seconds': round(time.monotonic() - t0, 3)})


def stamp_send(host, port):
    # One datagram per line read on stdin (its number), carrying the wall-clock time it left.
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    emit({'listening': 'stdin'})
    for line in sys.stdin:
        k = int(line)
        s.sendto(struct.pack('!QQ', k, time.time_ns()), (host, port))


def stamp_recv(port, seconds):
    # Each datagram's number and the one-way time from its send to the kernel's receive stamp.
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    so_timestampns = getattr(socket, 'SO_TIMESTAMPNS', 35)  # Linux; not every Python names it
    s.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
    s.bind(('::', port))
    s.settimeout(0.5)
    emit({'listening': port})
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        try:
            data, anc, _, _ = s.recvmsg(64, socket.CMSG_SPACE(16))
        except socket.timeout:
            continue
        k, sent = struct.unpack('!QQ', data[:16])
        got = time.time_ns()
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == so_timestampns:
                sec, nsec = struct.unpack('qq', raw[:16])
                got = sec * 1_000_000_000 + nsec
        emit({'seq': k, 'us': round((got - sent) / 1000, 1)})


def main(argv):
    cmd, args = argv[0], argv[1:]
    flags = [a for a in args if a.startswith('--')]
    args = [a for a in args if not a.startswith('--')]
    if cmd == 'tcp-sink':
        tcp_sink(int(args[0]), float(args[1]), '--echo' in flags)
    elif cmd == 'tcp-send':
        mbps = [float(f.split('=', 1)[1]) for f in flags if f.startswith('--mbps=')]
        timeout = [float(f.split('=', 1)[1]) for f in flags if f.startswith('--timeout=')]
        tcp_send(args[0], int(args[1]), int(args[2]), '--echo' in flags, mbps[0] if mbps else None, timeout[0] if timeout else 20)
    elif cmd == 'tcp-connect':
        tcp_connect(args[0], int(args[1]), float(args[2]))
    elif cmd == 'udp-recv':
        udp_recv(int(args[0]), float(args[1]), int(args[2]) if len(args) > 2 else None)
    elif cmd == 'udp-send':
        udp_send(args[0], int(args[1]), int(args[2]))
    elif cmd == 'forge':
        forge(args[0], args[1], args[2], args[3], args[4], int(args[5]), int(args[6]))
    elif cmd == 'fuzz':
        fuzz(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]), args[6:])
    elif cmd == 'probe':
        probe(args[0], int(args[1]), float(args[2]), float(args[3]))
    elif cmd == 'probe-log':
        probe_log(int(args[0]), float(args[1]))
    elif cmd == 'stamp-send':
        stamp_send(args[0], int(args[1]))
    elif cmd == 'stamp-recv':
        stamp_recv(int(args[0]), float(args[1]))
    elif cmd == 'spray':
        spray(args[0], args[1], args[2], args[3], args[4], float(args[5]), float(args[6]), int(args[7]))
    else:
        raise SystemExit('unknown command ' + cmd)


if __name__ == '__main__':
    main(sys.argv[1:])
