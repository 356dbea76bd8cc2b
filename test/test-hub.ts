// The in-memory key-exchange hub of the offline tests, with every message it carries recorded
// and each one open to being dropped, held back or forged.

import type { KxTransport } from '../src/switch/key-exchange.js';
import { MemoryHub } from '../src/switch/transports.js';

export class TestHub extends MemoryHub {
  /** Return 'drop' to lose a message, 'hold' to keep it until release(). */
  decide: (msg: Buffer, from: number, to: number) => 'pass' | 'drop' | 'hold' = () => 'pass';
  readonly held: (() => void)[] = [];
  /** Every message sent, in order: its type (first byte), the message, its ends. */
  readonly sent: { type: number; msg: Buffer; from: number; to: number }[] = [];

  override transport(address: number): KxTransport {
    const inner = super.transport(address);
    return {
      ...inner,
      send: (msg, to) => {
        this.sent.push({ type: msg[0], msg, from: address, to });
        const d = this.decide(msg, address, to);
        if (d === 'drop') return;
        if (d === 'hold') this.held.push(() => inner.send(msg, to));
        else inner.send(msg, to);
      },
    };
  }

  release(): void {
    for (const f of this.held.splice(0)) f();
  }

  /** Deliver a message as if `from` had sent it. */
  inject(from: number, to: number, msg: Buffer): void {
    super.transport(from).send(msg, to);
  }
}
