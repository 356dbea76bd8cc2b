// DHCPv6 (RFC 8415), the part a server on a VM's link needs: read a client's message, write
// the server's answer. Message: type (1 byte), transaction id (3), options (code 2, length 2,
// data). Every read is bounded by the message; a message that breaks the format is refused.

import { PROTO_UDP, pseudoHeaderChecksum } from './ipv6.js';

export const DHCP_CLIENT_PORT = 546;
export const DHCP_SERVER_PORT = 547;
/** All_DHCP_Relay_Agents_and_Servers, where clients send. */
export const ALL_DHCP_SERVERS = Buffer.from('ff020000000000000000000000010002', 'hex');

export const enum DhcpMsg {
  Solicit = 1, Advertise = 2, Request = 3, Confirm = 4, Renew = 5, Rebind = 6, Reply = 7, Release = 8,
  Decline = 9, Reconfigure = 10, InformationRequest = 11, RelayForw = 12, RelayRepl = 13,
}

export const enum DhcpOpt {
  ClientId = 1, ServerId = 2, IaNa = 3, IaTa = 4, IaAddr = 5, Oro = 6, ElapsedTime = 8, StatusCode = 13,
  RapidCommit = 14,
}

export const enum DhcpStatus { Success = 0, NoAddrsAvail = 2, NotOnLink = 4 }

/** Infinity for lifetimes and T1/T2 (RFC 8415 7.7): the identity never changes. */
export const DHCP_INFINITY = 0xffffffff;

/** What a server needs of a client's message; offsets into the buffer it was read from. */
export interface DhcpRequest {
  type: number;
  /** The 3-byte transaction id. */
  xid: number;
  clientId: { off: number; len: number } | null;
  serverId: { off: number; len: number } | null;
  /** IAIDs of the IA_NA options, in order; `addrs[k]`: offset of the first IAADDR of IA k, or -1. */
  iaids: number[];
  iaAddr: number[];
  rapidCommit: boolean;
}

/** Read the message at buf[m, end); returns why not as a string. */
export function readDhcp(buf: Uint8Array, m: number, end: number, out: DhcpRequest): string | null {
  if (end - m < 4) return 'shorter than a DHCPv6 header';
  out.type = buf[m];
  out.xid = (buf[m + 1] << 16) | (buf[m + 2] << 8) | buf[m + 3];
  out.clientId = null;
  out.serverId = null;
  out.iaids.length = 0;
  out.iaAddr.length = 0;
  out.rapidCommit = false;
  for (let p = m + 4; p < end; ) {
    if (end - p < 4) return 'an option header runs past the message';
    const code = (buf[p] << 8) | buf[p + 1];
    const len = (buf[p + 2] << 8) | buf[p + 3];
    const data = p + 4;
    if (data + len > end) return `option ${code} runs past the message`;
    if (code === DhcpOpt.ClientId || code === DhcpOpt.ServerId) {
      if (len < 2 || len > 130) return `a DUID of ${len} bytes`; // RFC 8415 11.1: 2-byte type + up to 128
      if (code === DhcpOpt.ClientId) out.clientId = { off: data, len };
      else out.serverId = { off: data, len };
    } else if (code === DhcpOpt.IaNa) {
      if (len < 12) return `an IA_NA of ${len} bytes`;
      out.iaids.push(((buf[data] << 24) | (buf[data + 1] << 16) | (buf[data + 2] << 8) | buf[data + 3]) >>> 0);
      let addr = -1;
      for (let q = data + 12; q < data + len; ) {
        if (data + len - q < 4) return 'an IA_NA option runs past its IA';
        const c = (buf[q] << 8) | buf[q + 1];
        const l = (buf[q + 2] << 8) | buf[q + 3];
        if (q + 4 + l > data + len) return 'an IA_NA option runs past its IA';
        if (c === DhcpOpt.IaAddr) {
          if (l < 24) return `an IAADDR of ${l} bytes`;
          if (addr < 0) addr = q + 4;
        }
        q += 4 + l;
      }
      out.iaAddr.push(addr);
    } else if (code === DhcpOpt.RapidCommit) {
      out.rapidCommit = true;
    }
    p = data + len;
  }
  return null;
}

export function newDhcpRequest(): DhcpRequest {
  return { type: 0, xid: 0, clientId: null, serverId: null, iaids: [], iaAddr: [], rapidCommit: false };
}

/** Writes options into buf from `at`; returns the next offset. */
export class DhcpWriter {
  constructor(private readonly buf: Uint8Array, public at: number) {}

  header(type: number, xid: number): this {
    this.buf[this.at] = type;
    this.buf[this.at + 1] = (xid >> 16) & 0xff;
    this.buf[this.at + 2] = (xid >> 8) & 0xff;
    this.buf[this.at + 3] = xid & 0xff;
    this.at += 4;
    return this;
  }

  /** An option with `data` copied from src[off, off+len). */
  copy(code: number, src: Uint8Array, off: number, len: number): this {
    this.optHeader(code, len);
    this.buf.set(src.subarray(off, off + len), this.at);
    this.at += len;
    return this;
  }

  empty(code: number): this {
    this.optHeader(code, 0);
    return this;
  }

  /** IA_NA with one IAADDR (`addr` with infinite lifetimes), or with a status instead. */
  iaNa(iaid: number, addr: Uint8Array | null, status: DhcpStatus = DhcpStatus.Success): this {
    const inner = addr ? 4 + 24 : 4 + 2;
    this.optHeader(DhcpOpt.IaNa, 12 + inner);
    this.u32(iaid);
    this.u32(addr ? DHCP_INFINITY : 0); // T1
    this.u32(addr ? DHCP_INFINITY : 0); // T2
    if (addr) {
      this.optHeader(DhcpOpt.IaAddr, 24);
      this.buf.set(addr, this.at);
      this.at += 16;
      this.u32(DHCP_INFINITY); // preferred
      this.u32(DHCP_INFINITY); // valid
    } else {
      this.optHeader(DhcpOpt.StatusCode, 2);
      this.u16(status);
    }
    return this;
  }

  status(code: DhcpStatus): this {
    this.optHeader(DhcpOpt.StatusCode, 2);
    this.u16(code);
    return this;
  }

  private optHeader(code: number, len: number): void {
    this.u16(code);
    this.u16(len);
  }

  private u16(v: number): void {
    this.buf[this.at] = v >> 8;
    this.buf[this.at + 1] = v & 0xff;
    this.at += 2;
  }

  private u32(v: number): void {
    this.buf[this.at] = v >>> 24;
    this.buf[this.at + 1] = (v >>> 16) & 0xff;
    this.buf[this.at + 2] = (v >>> 8) & 0xff;
    this.buf[this.at + 3] = v & 0xff;
    this.at += 4;
  }
}

/** UDP checksum over the IPv6 pseudo-header of the header at `ip` and the datagram at `udp`; 0 when valid. */
export function udp6Checksum(buf: Uint8Array, ip: number, udp: number, udpLen: number): number {
  return pseudoHeaderChecksum(buf, ip, udp, udpLen, PROTO_UDP);
}
