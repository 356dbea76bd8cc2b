// Addresses as text: IPv4 (a uint32 in host order inside the switch), IPv6 (16 bytes) and
// MAC (6 bytes). Parsers are for config and control paths: they throw a plain Error for
// bad text, which callers wrap with the YAML path or field the text came from.

/** "10.0.0.1" → uint32; throws for anything else (config path). */
export function parseIpv4Address(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new Error(`not an IPv4 address: ${JSON.stringify(text)}`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIpv4(addr: number): string {
  return [addr >>> 24, (addr >>> 16) & 0xff, (addr >>> 8) & 0xff, addr & 0xff].join('.');
}

/** Parse IPv6 text (RFC 4291 2.2, with "::" and an optional trailing dotted quad). Config path: throws. */
export function parseIpv6Address(text: string): Buffer {
  const bad = (): never => {
    throw new Error(`not an IPv6 address: ${JSON.stringify(text)}`);
  };
  let s = text;
  const tail: number[] = [];
  if (s.includes('.')) {
    const cut = s.lastIndexOf(':');
    const quad = s.slice(cut + 1).split('.');
    if (cut < 0 || quad.length !== 4 || quad.some((q) => !/^\d{1,3}$/.test(q) || Number(q) > 255)) bad();
    const q = quad.map(Number);
    tail.push((q[0] << 8) | q[1], (q[2] << 8) | q[3]);
    s = s.slice(0, cut + 1); // keep "::" before the quad, drop a single ':'
    if (!s.endsWith('::')) s = s.slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) bad();
  const group = (g: string): number => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : bad());
  const head = halves[0] === '' ? [] : halves[0].split(':').map(group);
  const rest = halves.length === 2 ? (halves[1] === '' ? [] : halves[1].split(':').map(group)) : [];
  const words = halves.length === 2
    ? [...head, ...new Array<number>(8 - head.length - rest.length - tail.length).fill(0), ...rest, ...tail]
    : [...head, ...tail];
  if (words.length !== 8 || (halves.length === 2 && head.length + rest.length + tail.length > 7)) bad();
  const out = Buffer.alloc(16);
  words.forEach((w, k) => out.writeUInt16BE(w, k * 2));
  return out;
}

/** Canonical text (RFC 5952): lowercase, longest run of zero groups compressed. */
export function formatIpv6(buf: Uint8Array, off = 0): string {
  const words: number[] = [];
  for (let k = 0; k < 8; k++) words.push((buf[off + 2 * k] << 8) | buf[off + 2 * k + 1]);
  let bestAt = -1;
  let bestLen = 1;
  for (let k = 0; k < 8; ) {
    if (words[k] !== 0) {
      k++;
      continue;
    }
    let j = k;
    while (j < 8 && words[j] === 0) j++;
    if (j - k > bestLen) {
      bestAt = k;
      bestLen = j - k;
    }
    k = j;
  }
  const hex = (ws: number[]): string => ws.map((w) => w.toString(16)).join(':');
  if (bestAt < 0) return hex(words);
  // join, not + or a template: one flat string (a cable keeps it), not a tree of concatenations.
  return [hex(words.slice(0, bestAt)), '::', hex(words.slice(bestAt + bestLen))].join('');
}

/** Parse "02:00:5e:10:00:01" into 6 bytes; throws on anything else (config only). */
export function parseMac(text: string): Buffer {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`not a MAC address: ${JSON.stringify(text)}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}
