// The two signed records of the mapping database (NVI Algorithm steps 2-6): a VM identity's
// binding to the host it runs on now, and a host's certificate. The store keeps them; the
// verifier trusts nothing in them that it has not checked.

/** A signed binding of a VM identity to the host it runs on now. */
export interface BindingRecord {
  /** The VM identity, canonical IPv6 text (RFC 5952). */
  readonly identity: string;
  readonly tenant: string;
  readonly vm: string;
  /** Host ID (name) the VM runs on. */
  readonly host: string;
  /** That host's underlay IPv4 address, dotted quad. */
  readonly hostAddress: string;
  /** Grows with every publication for the identity (each migration); never goes back. */
  readonly epoch: number;
  /** Validity of the binding, ISO 8601. */
  readonly notBefore: string;
  readonly notAfter: string;
  /** Cert(V6): the VM certificate, PEM, with the identity as IP subjectAltName. */
  readonly certificate: string;
  /** Sign(V6, Physical-IP): signature by the VM key over all fields above, base64. */
  readonly signature: string;
}

/** A host's certificate, binding its name to its underlay address. */
export interface HostRecord {
  readonly host: string;
  readonly address: string;
  /** PEM. */
  readonly certificate: string;
}
