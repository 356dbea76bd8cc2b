// Structured, rate-limited logging: one JSON object per line on stderr. Each event name has
// a token bucket of `perSecond` lines a second; lines beyond it are counted, and the count is
// reported ('log-suppressed') before that event's next line that gets through, so a packet
// flood never becomes a log flood and nothing is lost without a trace.

import { TokenBucket } from './token-bucket.js';

export type Level = 'info' | 'warn' | 'error';

export interface Logger {
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

export class JsonLogger implements Logger {
  private readonly buckets = new Map<string, { bucket: TokenBucket; suppressed: number }>();

  constructor(
    private readonly write: (line: string) => void = (line) => process.stderr.write(line),
    private readonly now: () => number = Date.now,
    private readonly perSecond = 20,
    private readonly context: Record<string, unknown> = {},
  ) {}

  info(event: string, fields?: Record<string, unknown>): void {
    this.log('info', event, fields);
  }

  warn(event: string, fields?: Record<string, unknown>): void {
    this.log('warn', event, fields);
  }

  error(event: string, fields?: Record<string, unknown>): void {
    this.log('error', event, fields);
  }

  private log(level: Level, event: string, fields?: Record<string, unknown>): void {
    const now = this.now();
    let w = this.buckets.get(event);
    if (!w) {
      w = { bucket: new TokenBucket(this.perSecond, this.perSecond, now), suppressed: 0 };
      this.buckets.set(event, w);
    }
    if (!w.bucket.take(now)) {
      w.suppressed++;
      return;
    }
    if (w.suppressed > 0) {
      this.emit(now, 'warn', 'log-suppressed', { of: event, lines: w.suppressed });
      w.suppressed = 0;
    }
    this.emit(now, level, event, fields);
  }

  private emit(now: number, level: Level, event: string, fields?: Record<string, unknown>): void {
    this.write(`${JSON.stringify({ time: new Date(now).toISOString(), level, event, ...this.context, ...fields })}\n`);
  }
}

/** A logger that keeps lines in memory (tests, replay). */
export class MemoryLogger implements Logger {
  readonly lines: { level: Level; event: string; fields?: Record<string, unknown> }[] = [];
  info(event: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'info', event, fields });
  }
  warn(event: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'warn', event, fields });
  }
  error(event: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'error', event, fields });
  }
}
