// A test-only DER tree: split a certificate into its elements, edit one, and encode it again
// with every parent's length recomputed, so a test can make exactly one encoding fault
// (a length in the long form, an indefinite length, a BOOLEAN of two bytes) in an otherwise
// valid certificate. Lenient on purpose: it reads what the reader under test must refuse.

/** How an element's length is written (X.690 8.1.3). */
export type LengthForm =
  | 'der' // the fewest octets: short form below 128 (X.690 10.1)
  | 'long' // long form even when short would do
  | 'padded' // long form with a leading zero octet
  | 'indefinite'; // 0x80, then the contents, then end-of-contents 00 00 (constructed only)

export interface DerNode {
  tag: number;
  /** Constructed elements: the children. Primitive ones: the contents. */
  children?: DerNode[];
  body?: Buffer;
  form?: LengthForm;
}

const isConstructed = (tag: number): boolean => (tag & 0x20) !== 0;

/** Decode one element and all that is below a constructed one (definite lengths only). */
export function decodeDer(buf: Buffer, off = 0): { node: DerNode; end: number } {
  const tag = buf[off];
  let len = buf[off + 1];
  let body = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + buf[body + k];
    body += n;
  }
  const end = body + len;
  if (end > buf.length) throw new Error(`test DER: element at ${off} runs past the end`);
  if (!isConstructed(tag)) return { node: { tag, body: Buffer.from(buf.subarray(body, end)) }, end };
  const children: DerNode[] = [];
  for (let p = body; p < end; ) {
    const c = decodeDer(buf, p);
    children.push(c.node);
    p = c.end;
  }
  return { node: { tag, children }, end };
}

function lengthOctets(len: number, form: LengthForm): number[] {
  if (form === 'indefinite') return [0x80];
  const bytes: number[] = [];
  for (let v = len; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  if (form === 'der') return len < 128 ? [len] : [0x80 | bytes.length, ...bytes];
  if (form === 'padded') bytes.unshift(0);
  if (bytes.length === 0) bytes.push(0);
  return [0x80 | bytes.length, ...bytes];
}

export function encodeDer(n: DerNode): Buffer {
  const form = n.form ?? 'der';
  const contents = n.children ? Buffer.concat(n.children.map(encodeDer)) : n.body!;
  const tail = form === 'indefinite' ? Buffer.from([0, 0]) : Buffer.alloc(0);
  return Buffer.concat([Buffer.from([n.tag, ...lengthOctets(contents.length, form)]), contents, tail]);
}

/** The element at a path of child indexes from the root. */
export function at(root: DerNode, ...path: number[]): DerNode {
  let n = root;
  for (const k of path) {
    const c = n.children?.[k];
    if (!c) throw new Error(`test DER: no child ${k} on the path ${path.join('.')}`);
    n = c;
  }
  return n;
}

/** A deep copy, so that each case edits its own tree. */
export function cloneDer(n: DerNode): DerNode {
  return { tag: n.tag, form: n.form, body: n.body && Buffer.from(n.body), children: n.children?.map(cloneDer) };
}
