// Debug export of ESP SAs in the format of Wireshark's `esp_sa` table (Preferences >
// Protocols > ESP > ESP SAs), one record per SA, so that tshark/Wireshark can decrypt a
// capture of the underlay: `tshark -o esp.enable_encryption_decode:TRUE -o "uat:esp_sa:<record>"`
// or the lines saved as `esp_sa` in a Wireshark profile.
//
// Wireshark 4.0's table has no column for extended sequence numbers: it decrypts our
// packets, but its optional ICV check uses the 8-byte AAD of 32-bit sequence numbers and
// reports our ICVs (12-byte ESN AAD, RFC 4106 5) as incorrect.

import { formatIpv4 } from '../base/address.js';
import type { EspAlgorithm } from './esp-cipher.js';

export interface SaKeys {
  readonly spi: number;
  readonly from: number;
  readonly to: number;
  readonly alg: EspAlgorithm;
  readonly key: Uint8Array;
  readonly salt: Uint8Array;
}

/** One `esp_sa` record: protocol, source, destination, SPI, cipher, key||salt, integrity, integrity key. */
export function wiresharkSaRecord(sa: SaKeys): string {
  const hex = Buffer.concat([sa.key, sa.salt]).toString('hex');
  const spi = `0x${sa.spi.toString(16).padStart(8, '0')}`;
  return [
    'IPv4', formatIpv4(sa.from), formatIpv4(sa.to), spi, 'AES-GCM with 16 octet ICV [RFC4106]', `0x${hex}`, 'NULL', '',
  ].map((f) => JSON.stringify(f)).join(',');
}

/** tshark options that decrypt with the given SAs. */
export function tsharkDecryptArgs(sas: readonly SaKeys[]): string[] {
  return ['-o', 'esp.enable_encryption_decode:TRUE', ...sas.flatMap((sa) => ['-o', `uat:esp_sa:${wiresharkSaRecord(sa)}`])];
}
