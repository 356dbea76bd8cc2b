// The key exchange's UDP transport: a message is in the kernel when send() returns (the
// first packet's path waits for INITs and ANSWERs, so none may sit behind other work of the
// event loop), and what arrives from the cloud's port reaches the handler with its sender.

import { spawnSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseIpv4Address } from '../src/base/address.js';
import { UdpTransport } from '../src/switch/transports.js';

const PORT = 47_311;

/** Bytes waiting in the receive queue of the UDP socket bound to `at`:PORT (ss, from the kernel). */
function receiveQueue(at: string): number {
  const r = spawnSync('ss', ['-uanH', 'src', `${at}:${PORT}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ss failed: ${r.stderr}`);
  const fields = r.stdout.trim().split(/\s+/);
  if (fields.length < 3) throw new Error(`no UDP socket on ${at}:${PORT}: ${JSON.stringify(r.stdout)}`);
  return Number(fields[1]);
}

test('send() hands the message to the kernel before it returns; the peer gets it with the sender address', async () => {
  const a = await UdpTransport.open(parseIpv4Address('127.0.0.1'), PORT);
  const b = await UdpTransport.open(parseIpv4Address('127.0.0.2'), PORT);
  try {
    const got = new Promise<{ msg: Buffer; from: number }>((resolve) => b.onMessage((msg, from) => resolve({ msg, from })));
    assert.is(receiveQueue('127.0.0.2'), 0);
    a.send(Buffer.from('init'), parseIpv4Address('127.0.0.2'));
    // Still in the same turn of the event loop: nothing deferred has run.
    assert.ok(receiveQueue('127.0.0.2') > 0, 'the datagram waits in the receiver\'s queue already');
    const m = await got;
    assert.is(m.msg.toString(), 'init');
    assert.is(m.from, parseIpv4Address('127.0.0.1'));
  } finally {
    a.close();
    b.close();
  }
});

test.run();
